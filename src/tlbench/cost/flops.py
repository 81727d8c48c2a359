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
  backbone parameter and step: under 1% of a step, see :mod:`tlbench.models.freeze`).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

# Corrected FLOP formulas for ``torch.utils.flop_counter.FlopCounterMode``.
#
# The stock registry of the installed torch miscounts grouped-convolution backward and does not know
# the CPU flash attention kernel. The formulas here replace or add exactly the entries the supported
# backbones (``conf/backbone/*.yaml``: EfficientNet-Lite0/1/2, ResNet-18, ViT-Tiny) reach (see
# :mod:`tlbench.cost.flops` for the definition of what is counted, the measured gaps, and how the set
# was found). Every formula follows one convention:
#
# * one multiply-add = 2 FLOPs; only matmul-class work is counted;
# * a convolution does ``MACs = numel(output) * prod(weight.shape[1:])`` (``numel(input)`` for a
#   transposed convolution), which already accounts for ``groups``; its input gradient and its weight
#   gradient each cost the same MACs again, and each is counted only when ``output_mask`` asks for it;
# * attention does two products, scores ``q @ k^T`` and values ``p @ v``; its backward does four
#   (``dP = dO @ v^T``, ``dV = p^T @ dO``, ``dQ = dS @ k``, ``dK = dS^T @ q``), the count of the eager
#   math path. Causal masking and ``scale`` do not change the count (upper bound).

Shape = Sequence[int]
Formula = Callable[..., int]

_ALL_GRADS = (True, True, True)


# ---------------------------------------------------------------- convolution


def _conv_macs(x_shape: Shape, w_shape: Shape, out_shape: Shape, *, transposed: bool) -> int:
    # Each output element (each input element for a transposed conv) meets one weight slice
    # of C_in/groups * prod(kernel) values: groups are already in w_shape[1].
    return prod(x_shape if transposed else out_shape) * prod(w_shape[1:])


def _conv_flops(
    x_shape: Shape,
    w_shape: Shape,
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    *args: Any,
    out_shape: Shape,
    **kwargs: Any,
) -> int:
    return 2 * _conv_macs(x_shape, w_shape, out_shape, transposed=transposed)


def _conv_grad_flops(
    grad_out_shape: Shape, x_shape: Shape, w_shape: Shape, *, transposed: bool, mask: Sequence[bool]
) -> int:
    out_shape = x_shape if transposed else grad_out_shape
    macs = _conv_macs(x_shape, w_shape, out_shape, transposed=transposed)
    # grad_input = conv_transpose(grad_out, w); grad_weight = conv(x, grad_out): same MACs each.
    return 2 * macs * (int(bool(mask[0])) + int(bool(mask[1])))


def _conv_backward_flops(
    grad_out_shape: Shape,
    x_shape: Shape,
    w_shape: Shape,
    _bias_sizes: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: Sequence[bool],
    *args: Any,
    **kwargs: Any,
) -> int:
    return _conv_grad_flops(grad_out_shape, x_shape, w_shape, transposed=transposed, mask=output_mask)


# ---------------------------------------------------------------- attention


def attention_flops(
    q_shape: Shape, k_shape: Shape, v_shape: Shape, *, grads: Sequence[bool] | None = None
) -> int:
    """FLOPs of the two attention products, or of their backward when ``grads`` is given.

    Layout ``(..., heads, seq, dim)``; the leading dims of ``q`` set the batch (grouped-query attention
    broadcasts the fewer key/value heads, so the work follows the query heads).

    Args:
        q_shape: query shape ``(..., L, d_qk)``.
        k_shape: key shape ``(..., S, d_qk)``.
        v_shape: value shape ``(..., S, d_v)``.
        grads: ``(dq, dk, dv)`` flags for a backward count; ``None`` counts the forward. Forward is
            ``2*BH*L*S*(d_qk + d_v)``; backward adds ``2*BH*L*S*d_v`` for ``dP = dO @ v^T`` when q or k
            needs a gradient, the same for ``dV = p^T @ dO`` when v does, and ``2*BH*L*S*d_qk`` each
            for ``dQ = dS @ k`` and ``dK = dS^T @ q``.

    Returns:
        The FLOP count.
    """
    batch_heads = prod(q_shape[:-2])
    seq_q, d_qk = q_shape[-2], q_shape[-1]
    seq_k, d_v = k_shape[-2], v_shape[-1]
    score_macs = batch_heads * seq_q * seq_k * d_qk
    value_macs = batch_heads * seq_q * seq_k * d_v
    if grads is None:
        return 2 * (score_macs + value_macs)
    need_q, need_k, need_v = (bool(g) for g in grads[:3])
    macs = value_macs * (int(need_q or need_k) + int(need_v)) + score_macs * (int(need_q) + int(need_k))
    return 2 * macs


def _sdpa_cpu_flops(q: Shape, k: Shape, v: Shape, *args: Any, **kwargs: Any) -> int:
    return attention_flops(q, k, v)


def _sdpa_cpu_backward_flops(grad_out: Shape, q: Shape, k: Shape, v: Shape, *args: Any, **kwargs: Any) -> int:
    # the CPU flash backward always produces dq, dk and dv
    return attention_flops(q, k, v, grads=_ALL_GRADS)


def corrected_formulas() -> dict[Any, Formula]:
    """The ``custom_mapping`` for :class:`~torch.utils.flop_counter.FlopCounterMode`.

    Returns:
        A fresh mapping from aten op packets to formulas; ops missing from the installed torch are skipped.
    """
    table: dict[str, Formula] = {
        "convolution": _conv_flops,  # every conv (any groups, transposed) the backbones run, meta or CPU
        "convolution_backward": _conv_backward_flops,  # the stock formula ignores groups
        # ViT-Tiny's fused attention when counted with real compute on a CPU (the meta fallback)
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flops,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_backward_flops,
    }
    aten = torch.ops.aten
    return {getattr(aten, name): fn for name, fn in table.items() if hasattr(aten, name)}


log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]


def counting_mode(*, display: bool = False, depth: int = 2) -> FlopCounterMode:
    """A ``FlopCounterMode`` with the corrected and added formulas above.

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


# (caller's key, sample shape) -> forward FLOPs per sample. Counting costs ~0.5 s of Python per call on
# a CPU, and a frozen prefix (its content key) gives the same answer for every split and every trial.
_FORWARD_PER_SAMPLE: dict[tuple[str, tuple[int, ...]], float] = {}


def forward_flops_per_sample(model: nn.Module, inputs: Tensor, *, key: str) -> float:
    """:func:`measure_forward_flops` per sample, remembered under ``key`` (what identifies ``model``)."""
    memo = (key, tuple(inputs.shape[1:]))
    if memo not in _FORWARD_PER_SAMPLE:
        _FORWARD_PER_SAMPLE[memo] = measure_forward_flops(model, inputs) / inputs.shape[0]
    return _FORWARD_PER_SAMPLE[memo]


def forget_forward_flops() -> None:
    """Forget the counts :func:`forward_flops_per_sample` remembered (the next trial counts its own)."""
    _FORWARD_PER_SAMPLE.clear()


# Closed-form FLOP counts from layer shapes, to validate the operator-level counter.
#
# :func:`analytic_train_step_flops` shares no counting code with the counter above, only the
# definition (2 FLOPs per multiply-add, matmul-class work only): it runs one forward pass with
# hooks on the supported layers, reads each layer's output shape, whether the tensor entering it
# requires grad and whether its weight is trainable, and applies these formulas (``MACs`` =
# multiply-adds, FLOPs = 2 * MACs):
#
# * ``nn.Conv1d/2d/3d``: ``MACs = numel(out) * C_in/groups * prod(kernel)``; stride, padding and
#   dilation enter only through the output shape.
#   ``nn.ConvTranspose*d``: ``MACs = numel(in) * C_out/groups * prod(kernel)``.
# * ``nn.Linear``: ``MACs = rows * in_features * out_features`` with ``rows`` the product of all
#   leading dims.
# * For both, backward = ``MACs`` for the input gradient if the layer's input requires grad, plus
#   ``MACs`` for the weight gradient if the weight is trainable (bias gradients are sums: not counted).
# * Attention products of ``B`` sequences, ``L`` queries, ``S`` keys, total width ``E = heads * head_dim``:
#   scores and values each ``MACs = B * L * S * E``. Backward: ``dP = dO @ v^T`` (one ``B*L*S*E``)
#   if q or k requires grad, ``dV = p^T @ dO`` if v does, ``dQ = dS @ k`` if q does, ``dK = dS^T @ q``
#   if k does -- the exact products autograd runs for eager attention.
# * ``timm`` ``Attention`` (ViT): only the two products above; its ``qkv`` / ``proj`` are ``nn.Linear``
#   and are counted by their own hooks. q/k/v require grad if ``x`` does or ``qkv`` (or the q/k norm)
#   has trainable parameters.
# * ``nn.MultiheadAttention``: its projections are applied functionally, so the hook counts them:
#   q ``B*L*E*E``, k ``B*S*E*kdim``, v ``B*S*E*vdim``, output ``B*L*E*E``, each with input/weight
#   gradients as for ``Linear``; ``S`` grows by one for ``bias_k`` and for ``add_zero_attn``.
#
# * peft LoRA layers (``strategy=lora``) need no formula of their own: the frozen ``base_layer`` and the
#   adapter's ``lora_A`` / ``lora_B`` are plain ``nn.Conv2d`` / ``nn.Linear`` modules, each counted by its
#   own hook with the rules above (``lora_A`` reads the adapter dropout's output, which requires grad
#   exactly when the layer's input does). A merged layer runs its base layer alone.
#
# Only these layers are counted; a model doing matmul work elsewhere (functional matmuls, other
# attention classes) is under-counted here by design -- this is a validator, not the production counter.


def _needs_grad(*params: Tensor | None) -> bool:
    return any(p is not None and p.requires_grad for p in params)


def _matmul_flops(macs: int, *, input_grad: bool, weight_grad: bool) -> tuple[int, int]:
    return 2 * macs, 2 * macs * (int(input_grad) + int(weight_grad))


def _attention_products(macs: int, *, q: bool, k: bool, v: bool) -> tuple[int, int]:
    backward_macs = macs * (int(q or k) + int(v) + int(q) + int(k))
    return 2 * 2 * macs, 2 * backward_macs


def _conv(module: nn.modules.conv._ConvNd, x: Tensor, out: Tensor) -> tuple[int, int]:
    per_position = prod(module.weight.shape[1:])
    macs = (x.numel() if module.transposed else out.numel()) * per_position
    return _matmul_flops(macs, input_grad=x.requires_grad, weight_grad=module.weight.requires_grad)


def _linear(module: nn.Linear, x: Tensor, out: Tensor) -> tuple[int, int]:
    macs = out.numel() // module.out_features * module.in_features * module.out_features
    return _matmul_flops(macs, input_grad=x.requires_grad, weight_grad=module.weight.requires_grad)


def _timm_attention(module: TimmAttention, x: Tensor) -> tuple[int, int]:
    batch, tokens, _ = x.shape
    qkv = x.requires_grad or _needs_grad(*module.qkv.parameters())
    q = qkv or _needs_grad(*module.q_norm.parameters())
    k = qkv or _needs_grad(*module.k_norm.parameters())
    macs = batch * tokens * tokens * module.num_heads * module.head_dim
    return _attention_products(macs, q=q, k=k, v=qkv)


def _sequence_dims(x: Tensor, *, batch_first: bool) -> tuple[int, int]:
    """(batch, length) of an MHA input, which may be unbatched ``(L, E)``."""
    if x.dim() == 2:
        return 1, x.shape[0]
    return (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])


def _mha(module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor) -> tuple[int, int]:
    e = module.embed_dim
    batch, len_q = _sequence_dims(query, batch_first=module.batch_first)
    _, len_k = _sequence_dims(key, batch_first=module.batch_first)
    if module._qkv_same_embed_dim:
        w_q = w_k = w_v = module.in_proj_weight
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    bias = module.in_proj_bias
    fwd = bwd = 0
    for x, w, rows in ((query, w_q, batch * len_q), (key, w_k, batch * len_k), (value, w_v, batch * len_k)):
        f, b = _matmul_flops(rows * e * w.shape[1], input_grad=x.requires_grad, weight_grad=w.requires_grad)
        fwd, bwd = fwd + f, bwd + b
    q = _needs_grad(query, w_q, bias)
    k = _needs_grad(key, w_k, bias, module.bias_k)
    v = _needs_grad(value, w_v, bias, module.bias_v)
    len_k += int(module.bias_k is not None) + int(module.add_zero_attn)
    f, b = _attention_products(batch * len_q * len_k * e, q=q, k=k, v=v)
    fwd, bwd = fwd + f, bwd + b
    out_proj = module.out_proj.weight
    f, b = _matmul_flops(batch * len_q * e * e, input_grad=q or k or v, weight_grad=out_proj.requires_grad)
    return fwd + f, bwd + b


_MHA_ARGS = ("query", "key", "value")


class _Tally:
    """Accumulates (forward, backward) FLOPs from the hooks."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def add(self, flops: tuple[int, int]) -> None:
        self.forward += flops[0]
        self.backward += flops[1]

    def hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            self.add(_conv(module, args[0], out))
        elif isinstance(module, nn.Linear):
            self.add(_linear(module, args[0], out))
        elif isinstance(module, TimmAttention):
            self.add(_timm_attention(module, args[0] if args else kwargs["x"]))
        elif isinstance(module, nn.MultiheadAttention):
            given = dict(zip(_MHA_ARGS, args, strict=False)) | {
                n: kwargs[n] for n in _MHA_ARGS if n in kwargs
            }
            self.add(_mha(module, given["query"], given["key"], given["value"]))


_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, TimmAttention, nn.MultiheadAttention)


def analytic_train_step_flops(
    model: nn.Module, input_shape: Sequence[int], *, use_meta: bool = True
) -> StepFlops:
    """Closed-form FLOPs of one training step of ``model`` on inputs of ``input_shape``.

    The forward pass runs (with grad enabled, so ``requires_grad`` propagates as in training) on a copy
    of the model that keeps train/eval modes and ``requires_grad`` flags; the input itself does not
    require grad. The formulas are in the module docstring.

    Args:
        model: the model, freeze plan applied.
        input_shape: ``(batch, ...)`` of one input batch.
        use_meta: run the shape pass on the ``meta`` device (free); ``False`` runs it for real on the
            model's device.

    Returns:
        Forward and backward FLOPs of the supported layers for ``input_shape[0]`` samples.
    """
    if not input_shape or input_shape[0] <= 0:
        raise ValueError(f"input_shape must start with a positive batch size, got {input_shape=}")
    shadow = shadow_copy(model, on_meta=use_meta)
    first = next(iter(shadow.parameters()), None)
    device = torch.device("meta") if use_meta else torch.device("cpu") if first is None else first.device
    tally = _Tally()
    handles: list[RemovableHandle] = [
        m.register_forward_hook(tally.hook, with_kwargs=True)
        for m in shadow.modules()
        if isinstance(m, _SUPPORTED)
    ]
    try:
        with torch.enable_grad():
            shadow(torch.zeros(tuple(input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return StepFlops(tally.forward, tally.backward, batch_size=input_shape[0])
