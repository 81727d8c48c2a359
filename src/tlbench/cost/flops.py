"""Training and inference FLOPs, counted from the operators a step actually runs.

What is counted (the definition behind ``cost/train_flops``)
-------------------------------------------------------------
* Only matmul-class work: convolutions (any groups, stride, padding, dilation, transposed), ``mm`` /
  ``addmm`` / ``bmm`` / ``baddbmm`` (so ``Linear``, ``matmul`` and ``einsum``), and the two attention
  products (scores ``q @ k^T``, values ``p @ v``), eager or in the CPU flash kernel. One
  multiply-add is 2 FLOPs; zero padding is multiplied like any other input (the naive dense
  formula). Norms, activations, softmax, pooling, bias additions, dropout, losses, elementwise ops
  and gradient accumulation are not counted: they are memory-bound, small next to the matmul work,
  and not what published FLOP figures count (lite0 at 224 px comes out at 384 M multiply-adds,
  vit_tiny at 1.25 G, as timm reports).
* Forward is one pass of the model plus the loss. Backward is what autograd actually executes,
  which honours frozen layers: a layer does its input-gradient product only when its input requires
  grad (so a frozen layer before the first trainable one does nothing, and the first trainable layer
  computes only its weight gradient), and its weight-gradient product only when its weight is
  trainable. A frozen layer after a trainable one still pays for its input gradient.
* The parameter-efficient strategies follow from that rule: ``bitfit`` (every weight frozen, the
  normalisation layers train) pays the input gradient of every layer after its first trainable norm
  and no weight gradient but the head's; ``lora`` adds its adapters' products (forward, input and
  weight gradients) to that. ``strategy.l2_sp``'s penalty is elementwise and counts 0 (a few FLOPs per
  backbone parameter and step: under 1% of a step, see :mod:`tlbench.optim.l2_sp`).
* Attention backward counts at most four products (``dP``, ``dV``, ``dQ``, ``dK``, each needed only
  for the inputs that require grad), as the eager math path runs them. Causal masks and ``scale``
  do not change the count (an upper bound for causal attention). The CPU flash kernel has no
  gradient mask: it always produces dq, dk and dv, and is counted so; this differs from eager
  attention only when some but not all of q/k/v need grad (e.g. cross-attention over frozen
  features), never for self-attention.
* Work that really runs twice is counted twice: activation checkpointing, or a model called twice.

Gaps of ``FlopCounterMode`` in torch 2.14.1 that :func:`counting_mode` fixes
----------------------------------------------------------------------------
Measured on CPU (see ``tests/cost/test_flops.py``):

* ``convolution_backward`` ignores ``groups`` in the weight gradient: a depthwise 3x3 conv
  (8 channels, groups=8, input 2x8x16x16) has forward 73,728 FLOPs and a true backward of 147,456,
  but the stock counter reports 663,552 (9x forward; 589,824 = 8x forward when the input needs no
  grad); with groups=4 it reports 737,280 (5x forward) instead of 294,912. Dense convs were right.
* ``_scaled_dot_product_flash_attention_for_cpu`` and its backward (what ``F.scaled_dot_product_attention``
  runs on CPU: timm ViT ``Attention`` with ``fused_attn``) have no formula: 0 FLOPs forward and
  backward. Only the real-compute fallback below reaches them; on ``meta`` attention takes the math
  path, whose ``bmm`` products the stock counter gets right.

``aten.linear`` decomposes into ``addmm``/``mm`` and ``addmm`` backward computes only the gradients
autograd needs (a frozen ``Linear`` with a grad-requiring input costs exactly one ``mm``); ``bmm``,
``baddbmm``, ``matmul`` and ``einsum`` (via ``bmm``) and the math SDPA path (via ``bmm``) were right.

Only the ops the supported backbones reach have formulas here. Counting the FLOP profile of every
``conf/backbone`` entry (EfficientNet-Lite0/1/2, ResNet-18, ViT-Tiny; every strategy) with each
formula instrumented reaches ``convolution`` and ``convolution_backward`` on ``meta``, plus the CPU
flash attention pair above with real compute. The formulas for other kernels (cuDNN / MIOpen /
oneDNN / slow convolution variants, ``mv`` / ``dot`` / ``addbmm`` / ``_addmm_activation``, the CUDA
flash / memory-efficient / cuDNN / fused attention kernels and their low-level forms, the
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` inference fast paths) were removed:
they were never reached. Such an op now counts what the stock registry says (0 where it has no
formula); the analytic cross-check in :mod:`tlbench.training.record` then tags the trial
``analytic mismatch`` and logs a warning, so a new backbone that needs a formula is noticed.

Not covered (stock behaviour kept): fused attention kernels on a GPU with real compute (the meta
path is used there too), ``torch.nn.attention.varlen`` custom ops and flex attention,
``_grouped_mm`` / ``_int_mm`` (no formula), ``torch.compile``-d graphs (untested).

Cost of measuring
-----------------
Counting runs on a throw-away copy of the model whose parameters and buffers live on the ``meta``
device: no memory is allocated and no arithmetic is done, so the cost (Python overhead per op, about
0.7 s for a lite0 training step) does not depend on batch size or resolution. Every op of
tf_efficientnet_lite0 and the timm ViTs has a meta kernel (batch norm in train mode included;
attention takes the eager math path there, which counts the same as the fused kernels). If a model
fails on ``meta`` (data-dependent control flow, an op without a meta kernel, tensors kept outside
parameters/buffers), the count falls back to real compute on a deep copy on the model's own device,
on ``batch_size`` samples.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tlbench.cost.flop_formulas import corrected_formulas

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]


def counting_mode(*, display: bool = False, depth: int = 2) -> FlopCounterMode:
    """A ``FlopCounterMode`` with the corrected and added formulas of :mod:`tlbench.cost.flop_formulas`.

    Args:
        display: print the per-module table on exit (as the stock counter does by default).
        depth: module depth of that table.

    Returns:
        A fresh, not yet entered, counter: ``with counting_mode() as mode: ...; mode.get_total_flops()``.
    """
    return FlopCounterMode(display=display, depth=depth, custom_mapping=corrected_formulas())


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step on ``batch_size`` samples.

    Attributes:
        forward: FLOPs of the forward pass (model + loss).
        backward: FLOPs of the backward pass, honouring frozen layers.
        batch_size: the number of samples the counts are for; FLOPs scale linearly with it.
    """

    forward: int
    backward: int
    batch_size: int = 1

    @property
    def total(self) -> int:
        """Forward plus backward FLOPs of the measured batch."""
        return self.forward + self.backward

    def per_sample(self, batch: int | None = None) -> float:
        """Training FLOPs per sample, the unit that multiplies the number of samples seen.

        Args:
            batch: samples the counts are for; defaults to the recorded ``batch_size``.

        Returns:
            ``total / batch``.
        """
        batch = self.batch_size if batch is None else batch
        if batch <= 0:
            raise ValueError(f"batch must be positive, got {batch=}")
        return self.total / batch


def shadow_copy(model: nn.Module, *, on_meta: bool) -> nn.Module:
    """A copy of ``model`` to run measurements on, leaving the original untouched.

    The copy keeps every module's train/eval mode and every parameter's ``requires_grad``, but not
    the ``.grad`` of the original. On ``meta`` the parameters and buffers are replaced before copying,
    so nothing is allocated (a plain ``deepcopy(...).to("meta")`` would first duplicate every weight).

    Args:
        model: the model to copy.
        on_meta: put parameters and buffers on the ``meta`` device; otherwise a real deep copy.

    Returns:
        The copy.
    """
    if not on_meta:
        clone = copy.deepcopy(model)
        for param in clone.parameters():
            param.grad = None
        return clone
    memo: dict[int, object] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def _model_device(model: nn.Module, inputs: Tensor) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return inputs.device if first is None else first.device


def _count_train_step(model: nn.Module, inputs: Tensor, targets: Tensor, loss_fn: LossFn) -> StepFlops:
    with torch.enable_grad():
        with counting_mode() as forward_mode:
            loss = loss_fn(model(inputs), targets)
        backward = 0
        if loss.requires_grad:  # a fully frozen model does no backward at all
            with counting_mode() as backward_mode:
                loss.backward()
            backward = backward_mode.get_total_flops()
    return StepFlops(forward_mode.get_total_flops(), backward, batch_size=inputs.shape[0])


def _count_forward(model: nn.Module, inputs: Tensor) -> int:
    with torch.no_grad(), counting_mode() as mode:
        model(inputs)
    return mode.get_total_flops()


def measure_train_step_flops(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int | None = 2,
    use_meta: bool = True,
) -> StepFlops:
    """Counts one forward + backward step as training would run it, without touching ``model``.

    The step runs on a copy (see :func:`shadow_copy`) that keeps each module's train/eval mode and each
    parameter's ``requires_grad``, so frozen layers are honoured exactly as in training. Pass the plain
    ``nn.Module`` (backbone + head), not a LightningModule attached to a trainer, which would be copied
    along with it.

    Args:
        model: the model as it will be trained (freeze plan applied).
        inputs: a batch of inputs; only the first ``batch_size`` samples are used.
        targets: the matching targets.
        loss_fn: ``loss_fn(outputs, targets)``; its own work is not matmul-class and counts 0.
        batch_size: samples to count on (FLOPs are linear in it); ``None`` uses the whole batch.
        use_meta: count on the ``meta`` device (free); ``False`` forces real compute on a copy.

    Returns:
        The counts, with ``batch_size`` set to the number of samples actually used.
    """
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be positive or None, got {batch_size=}")
    inputs, targets = inputs[:batch_size], targets[:batch_size]
    if use_meta:
        try:
            shadow = shadow_copy(model, on_meta=True)
            return _count_train_step(shadow, inputs.to("meta"), targets.to("meta"), loss_fn)
        except Exception as error:  # any failure on meta is retried for real, where a genuine bug recurs
            log.info("FLOP count on the meta device failed (%s); counting with real compute", error)
    device = _model_device(model, inputs)
    shadow = shadow_copy(model, on_meta=False)
    return _count_train_step(shadow, inputs.to(device), targets.to(device), loss_fn)


def measure_forward_flops(model: nn.Module, inputs: Tensor, *, use_meta: bool = True) -> int:
    """Counts one inference forward pass (no grad) on ``inputs``, without touching ``model``.

    Used for the cost of feature extraction and evaluation. Modules keep their train/eval mode, so
    call it on the model in the mode it will run in (it does not change the count for the layers we
    count, but it picks the same kernels).

    Args:
        model: the model.
        inputs: the batch to count for (free on ``meta``, so any size is fine).
        use_meta: count on the ``meta`` device; ``False`` forces real compute on a copy.

    Returns:
        FLOPs of the forward pass for the whole of ``inputs``.
    """
    if use_meta:
        try:
            return _count_forward(shadow_copy(model, on_meta=True), inputs.to("meta"))
        except Exception as error:  # see measure_train_step_flops
            log.info("FLOP count on the meta device failed (%s); counting with real compute", error)
    return _count_forward(shadow_copy(model, on_meta=False), inputs.to(_model_device(model, inputs)))
