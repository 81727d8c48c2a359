"""Training and inference FLOPs, counted from the operators a step actually runs.

What is counted (the definition behind ``cost/train_flops``):

* Only matmul-class work: convolutions (any groups, stride, padding, dilation, transposed), ``mm`` /
  ``addmm`` / ``bmm`` / ``baddbmm`` (so ``Linear``, ``matmul``, ``einsum``) and the two attention
  products (``q @ k^T``, ``p @ v``). One multiply-add is 2 FLOPs; zero padding is multiplied like any
  input. Norms, activations, softmax, pooling, biases, dropout, losses and elementwise ops are not
  counted (memory-bound, small, and not in published figures: lite0 at 224 px gives 384 M
  multiply-adds, vit_tiny 1.25 G, as timm reports).
* Backward is what autograd executes, so frozen layers are honoured: a layer pays its input gradient
  only when its input requires grad, and its weight gradient only when its weight trains. ``bitfit``
  pays the input gradients after its first trainable norm; ``lora`` adds its adapters' products;
  ``strategy.l2_sp``'s penalty is elementwise and counts 0 (under 1% of a step).
* Attention backward counts at most four products (``dP``, ``dV``, ``dQ``, ``dK``, each only for the
  inputs that need it), as the eager math path runs them; causal masks and ``scale`` do not change
  the count. The CPU flash kernel always computes dq, dk and dv and is counted so.
* Work that really runs twice (activation checkpointing, a model called twice) is counted twice.

Gaps of ``FlopCounterMode`` in torch 2.14.1 fixed by :func:`counting_mode` (measured on CPU, see
``tests/training/test_flops.py``): ``convolution_backward`` ignores ``groups`` in the weight gradient
(a depthwise 3x3 conv, 8 channels, input 2x8x16x16: forward 73,728, true backward 147,456, stock
663,552); ``_scaled_dot_product_flash_attention_for_cpu`` and its backward (timm ViT attention on a
CPU) have no formula (0 FLOPs). Only the ops the ``conf/backbone`` entries reach (every strategy,
instrumented) have formulas here; another op counts what the stock registry says, and the analytic
cross-check (:mod:`tlbench.training.record`) then tags the trial ``analytic mismatch``. Not covered:
fused attention kernels on a GPU with real compute, varlen / flex attention, ``_grouped_mm`` /
``_int_mm``, ``torch.compile``-d graphs.

Counting runs on a copy whose parameters and buffers live on the ``meta`` device: nothing is allocated
or computed, so its cost (about 0.7 s of Python for a lite0 step) does not depend on batch size or
resolution (attention takes the math path there, which counts the same). A model that fails on
``meta`` is counted with real compute on a deep copy on its own device.
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

# Corrected formulas for ``FlopCounterMode``: one multiply-add = 2 FLOPs; a convolution does
# ``numel(output) * prod(weight.shape[1:])`` MACs (``numel(input)`` transposed: groups are in
# ``weight.shape[1]``), its input and weight gradients the same again each, when ``output_mask`` asks.

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
    out_shape = x_shape if transposed else grad_out_shape
    macs = _conv_macs(x_shape, w_shape, out_shape, transposed=transposed)
    # grad_input = conv_transpose(grad_out, w); grad_weight = conv(x, grad_out): same MACs each.
    return 2 * macs * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


# ---------------------------------------------------------------- attention


def attention_flops(
    q_shape: Shape, k_shape: Shape, v_shape: Shape, *, grads: Sequence[bool] | None = None
) -> int:
    """FLOPs of the two attention products (layout ``(..., heads, seq, dim)``; the work follows the query
    heads), or of their backward for ``grads`` = (dq, dk, dv): ``dP = dO @ v^T`` when q or k needs a
    gradient, ``dV = p^T @ dO`` when v does, ``dQ = dS @ k`` and ``dK = dS^T @ q``."""
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


def counting_mode() -> FlopCounterMode:
    """A fresh ``FlopCounterMode`` with the formulas above (ops missing from this torch skipped)."""
    table: dict[str, Formula] = {
        "convolution": _conv_flops,  # every conv (any groups, transposed) the backbones run, meta or CPU
        "convolution_backward": _conv_backward_flops,  # the stock formula ignores groups
        # ViT-Tiny's fused attention when counted with real compute on a CPU (the meta fallback)
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flops,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_backward_flops,
    }
    aten = torch.ops.aten
    formulas = {getattr(aten, name): fn for name, fn in table.items() if hasattr(aten, name)}
    return FlopCounterMode(display=False, custom_mapping=formulas)


log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step (forward: model + loss; backward: frozen layers honoured) on
    ``batch_size`` samples."""

    forward: int
    backward: int
    batch_size: int = 1

    @property
    def total(self) -> int:
        return self.forward + self.backward


def shadow_copy(model: nn.Module, *, on_meta: bool) -> nn.Module:
    """A copy of ``model`` (train/eval modes and ``requires_grad`` kept, ``.grad`` not) to measure on.

    On ``meta`` the tensors are replaced before copying: ``deepcopy(...).to("meta")`` would first
    duplicate every weight."""
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


def _on_a_copy(model: nn.Module, count: Callable[..., Any], *tensors: Tensor, use_meta: bool) -> Any:
    """``count(copy, *tensors)`` on a meta copy of ``model``, else (or when that fails) on a real one."""
    if use_meta:
        try:
            return count(shadow_copy(model, on_meta=True), *(t.to("meta") for t in tensors))
        except Exception as error:  # any failure on meta is retried for real, where a genuine bug recurs
            log.info("FLOP count on the meta device failed (%s); counting with real compute", error)
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = tensors[0].device if first is None else first.device
    return count(shadow_copy(model, on_meta=False), *(t.to(device) for t in tensors))


def measure_train_step_flops(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    use_meta: bool = True,
) -> StepFlops:
    """One forward + backward step on the whole batch as training runs it (freeze state and train/eval
    modes honoured), on a copy: ``model`` is untouched. Pass the plain ``nn.Module``, not a
    LightningModule attached to a trainer (it would be copied along). ``loss_fn``'s own work counts 0."""

    def count(shadow: nn.Module, x: Tensor, y: Tensor) -> StepFlops:
        with torch.enable_grad():
            with counting_mode() as forward_mode:
                loss = loss_fn(shadow(x), y)
            backward = 0
            if loss.requires_grad:  # a fully frozen model does no backward at all
                with counting_mode() as backward_mode:
                    loss.backward()
                backward = backward_mode.get_total_flops()
        return StepFlops(forward_mode.get_total_flops(), backward, batch_size=x.shape[0])

    result: StepFlops = _on_a_copy(model, count, inputs, targets, use_meta=use_meta)
    return result


def measure_forward_flops(model: nn.Module, inputs: Tensor, *, use_meta: bool = True) -> int:
    """One inference forward pass (no grad) on all of ``inputs``, on a copy: ``model`` is untouched.
    Call it on the model in the train/eval mode it runs in (same kernels)."""

    def count(shadow: nn.Module, x: Tensor) -> int:
        with torch.no_grad(), counting_mode() as mode:
            shadow(x)
        return int(mode.get_total_flops())

    result: int = _on_a_copy(model, count, inputs, use_meta=use_meta)
    return result


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


# Closed-form FLOP counts from layer shapes, to validate the counter above (no shared counting code,
# only the definition): one forward pass with hooks on the supported layers reads each output shape,
# whether the layer's input requires grad and whether its weight trains (MACs: multiply-adds, x 2).
#
# * ``nn.Conv*d``: ``numel(out) * C_in/groups * prod(kernel)`` MACs (``numel(in) * ...`` transposed).
# * ``nn.Linear``: ``rows * in_features * out_features`` (rows: the product of the leading dims).
# * Both: backward = MACs for the input gradient if the input requires grad, plus MACs for the weight
#   gradient if the weight trains (bias gradients are sums: not counted).
# * Attention over ``B`` sequences, ``L`` queries, ``S`` keys, width ``E``: scores and values ``B*L*S*E``
#   each; backward ``dP`` if q or k requires grad, ``dV`` if v does, ``dQ`` if q does, ``dK`` if k does.
#   timm ``Attention``: only those two products (its ``qkv`` / ``proj`` are ``Linear``s with their own
#   hooks); q/k/v require grad if ``x`` does or ``qkv`` (or the q/k norm) trains.
#   ``nn.MultiheadAttention`` applies its projections functionally, so its hook counts them too
#   (q ``B*L*E*E``, k ``B*S*E*kdim``, v ``B*S*E*vdim``, out ``B*L*E*E``); ``S`` grows by one for
#   ``bias_k`` and for ``add_zero_attn``.
# * peft LoRA layers need nothing of their own: ``base_layer``, ``lora_A`` and ``lora_B`` are plain
#   ``Conv2d`` / ``Linear`` modules counted by their hooks.
#
# Other matmul work (functional matmuls, other attention classes) is not counted: a validator only.


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


_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, TimmAttention, nn.MultiheadAttention)


def analytic_train_step_flops(
    model: nn.Module, input_shape: Sequence[int], *, use_meta: bool = True
) -> StepFlops:
    """Closed-form FLOPs (the formulas above) of one training step on a ``(batch, ...)`` input that
    does not require grad, on a copy of ``model`` in its freeze state (``use_meta=False``: real compute)."""
    if not input_shape or input_shape[0] <= 0:
        raise ValueError(f"input_shape must start with a positive batch size, got {input_shape=}")
    shadow = shadow_copy(model, on_meta=use_meta)
    first = next(iter(shadow.parameters()), None)
    device = torch.device("meta") if use_meta else torch.device("cpu") if first is None else first.device
    forward = backward = 0

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        nonlocal forward, backward
        if isinstance(module, nn.modules.conv._ConvNd):
            flops = _conv(module, args[0], out)
        elif isinstance(module, nn.Linear):
            flops = _linear(module, args[0], out)
        elif isinstance(module, TimmAttention):
            flops = _timm_attention(module, args[0] if args else kwargs["x"])
        else:
            assert isinstance(module, nn.MultiheadAttention)  # the last of _SUPPORTED
            given = dict(zip(_MHA_ARGS, args, strict=False)) | {
                n: kwargs[n] for n in _MHA_ARGS if n in kwargs
            }
            flops = _mha(module, given["query"], given["key"], given["value"])
        forward, backward = forward + flops[0], backward + flops[1]

    handles: list[RemovableHandle] = [
        m.register_forward_hook(hook, with_kwargs=True) for m in shadow.modules() if isinstance(m, _SUPPORTED)
    ]
    try:
        with torch.enable_grad():
            shadow(torch.zeros(tuple(input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return StepFlops(forward, backward, batch_size=input_shape[0])
