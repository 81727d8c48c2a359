"""Corrected FLOP formulas for ``torch.utils.flop_counter.FlopCounterMode``.

The stock registry of the installed torch miscounts grouped-convolution backward, does not know the CPU
flash attention, the fused multi-head-attention / transformer-layer fast paths, several matmul-class
ops, and counts the recomputation of attention scores inside fused attention backward kernels. The
formulas here replace or add those entries (see :mod:`tlbench.cost.flops` for the definition of what
is counted and the measured gaps). Every formula follows one convention, so that a model is counted
the same whichever kernel runs it (CPU, CUDA flash / memory-efficient / cuDNN, or the eager math path):

* one multiply-add = 2 FLOPs; only matmul-class work is counted;
* a convolution does ``MACs = numel(output) * prod(weight.shape[1:])`` (``numel(input)`` for a
  transposed convolution), which already accounts for ``groups``; its input gradient and its weight
  gradient each cost the same MACs again, and each is counted only when ``output_mask`` asks for it;
* attention does two products, scores ``q @ k^T`` and values ``p @ v``; its backward does at most
  four (``dP = dO @ v^T``, ``dV = p^T @ dO``, ``dQ = dS @ k``, ``dK = dS^T @ q``) -- the score
  recomputation that flash-style kernels perform is an implementation detail and is not counted, so
  fused and eager attention agree. Causal masking and ``scale`` do not change the count (upper bound).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from math import prod
from typing import Any

import torch

Shape = Sequence[int]
Formula = Callable[..., int]

_ALL_GRADS = (True, True, True)


def _raw(fn: Formula) -> Formula:
    """Marks a formula as wanting the real tensors (values of offsets, nested tensors), not shapes."""
    vars(fn)["_get_raw"] = True
    return fn


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


def _plain_conv_flops(x_shape: Shape, w_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    return 2 * _conv_macs(x_shape, w_shape, out_shape, transposed=False)


def _transposed_conv_flops(
    x_shape: Shape, w_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    return 2 * _conv_macs(x_shape, w_shape, out_shape, transposed=True)


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


def _conv_backward_overrideable_flops(
    grad_out_shape: Shape,
    x_shape: Shape,
    w_shape: Shape,
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


def _slow_conv2d_backward_flops(
    grad_out_shape: Shape,
    x_shape: Shape,
    w_shape: Shape,
    _kernel_size: Any,
    _stride: Any,
    _padding: Any,
    output_mask: Sequence[bool] | None = None,
    *args: Any,
    **kwargs: Any,
) -> int:
    if output_mask is None:  # the .grad_input overload: which outputs exist says what is computed
        output_mask = (kwargs.get("grad_input") is not None, kwargs.get("grad_weight") is not None)
    return _conv_grad_flops(grad_out_shape, x_shape, w_shape, transposed=False, mask=output_mask)


# ---------------------------------------------------------------- matmul family


def _mv_flops(mat_shape: Shape, vec_shape: Shape, *args: Any, **kwargs: Any) -> int:
    return 2 * mat_shape[0] * mat_shape[1]


def _addmv_flops(_self_shape: Shape, mat_shape: Shape, vec_shape: Shape, *args: Any, **kwargs: Any) -> int:
    return _mv_flops(mat_shape, vec_shape)


def _dot_flops(a_shape: Shape, b_shape: Shape, *args: Any, **kwargs: Any) -> int:
    return 2 * a_shape[0]


def _addbmm_flops(_self_shape: Shape, a_shape: Shape, b_shape: Shape, *args: Any, **kwargs: Any) -> int:
    b, n, m = a_shape
    return 2 * b * n * m * b_shape[-1]


def _addmm_activation_flops(
    _self_shape: Shape, a_shape: Shape, b_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


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


def _sdpa_flops(q: Shape, k: Shape, v: Shape, *args: Any, **kwargs: Any) -> int:
    return attention_flops(q, k, v)


def _sdpa_backward_flops(grad_out: Shape, q: Shape, k: Shape, v: Shape, *args: Any, **kwargs: Any) -> int:
    return attention_flops(q, k, v, grads=_ALL_GRADS)


def _sdpa_efficient_backward_flops(
    grad_out: Shape,
    q: Shape,
    k: Shape,
    v: Shape,
    _attn_bias: Any,
    _out: Any,
    _logsumexp: Any,
    _philox_seed: Any,
    _philox_offset: Any,
    _dropout_p: Any,
    grad_input_mask: Sequence[bool],
    *args: Any,
    **kwargs: Any,
) -> int:
    return attention_flops(q, k, v, grads=grad_input_mask)


def _sdpa_overrideable_backward_flops(
    grad_out: Shape,
    q: Shape,
    k: Shape,
    v: Shape,
    _attn_bias: Any,
    grad_input_mask: Sequence[bool],
    *a: Any,
    **kw: Any,
) -> int:
    return attention_flops(q, k, v, grads=grad_input_mask)


def _per_sequence_shapes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cum_q: Any,
    cum_k: Any,
    max_q: Any,
    max_k: Any,
    *,
    layout: str,
) -> Iterator[tuple[Shape, Shape, Shape]]:
    """Yields ``(B, H, S, D)`` shapes for the low-level kernels, one per sequence when they are packed."""
    if cum_q is None:
        if layout in ("bshd", "1shd"):  # flash / memory-efficient kernels take (B, S, H, D)
            yield (
                tuple(q.transpose(1, 2).shape),
                tuple(k.transpose(1, 2).shape),
                tuple(v.transpose(1, 2).shape),
            )
        else:
            yield tuple(q.shape), tuple(k.shape), tuple(v.shape)
        return
    # Packed variable-length sequences: torch's own unpacking, assumed stable for the pinned torch.
    from torch.utils import flop_counter as upstream

    if layout == "1shd":
        sizes = upstream._unpack_efficient_attention_nested_shapes(
            query=q,
            key=k,
            value=v,
            cu_seqlens_q=cum_q,
            cu_seqlens_k=cum_k,
            max_seqlen_q=max_q,
            max_seqlen_k=max_k,
        )
    else:
        sizes = upstream._unpack_flash_attention_nested_shapes(
            query=q, key=k, value=v, cum_seq_q=cum_q, cum_seq_k=cum_k, max_q=max_q, max_k=max_k
        )
    for q_shape, k_shape, v_shape, _ in sizes:
        yield q_shape, k_shape, v_shape


def _low_level_attention(layout: str, *, backward: bool, tensors: int, offsets: int) -> Formula:
    """A raw formula for a low-level kernel: q/k/v start at arg ``tensors``, offsets at arg ``offsets``."""

    @_raw
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        q, k, v = args[tensors : tensors + 3]
        cum_q, cum_k, max_q, max_k = args[offsets : offsets + 4]
        grads = _ALL_GRADS if backward else None
        shapes = _per_sequence_shapes(q, k, v, cum_q, cum_k, max_q, max_k, layout=layout)
        return sum(attention_flops(qs, ks, vs, grads=grads) for qs, ks, vs in shapes)

    return formula


def _sequence_groups(x: torch.Tensor) -> list[tuple[int, int]]:
    """``(batch, length)`` groups of a batch-first sequence tensor; one group per sample if nested."""
    if x.is_nested:
        return [(1, t.shape[0]) for t in x.unbind()]
    return [(x.shape[0], x.shape[1])]


@_raw
def _native_mha_flops(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, embed_dim: int, *a: Any, **kw: Any
) -> int:
    e = embed_dim
    macs = 0
    for (b, len_q), (_, len_k) in zip(_sequence_groups(query), _sequence_groups(key), strict=True):
        # q, k, v and output projections, then the score and value products
        macs += b * (len_q * e * e + 2 * len_k * e * e + 2 * len_q * len_k * e + len_q * e * e)
    return 2 * macs


@_raw
def _encoder_layer_flops(src: torch.Tensor, embed_dim: int, *args: Any, **kwargs: Any) -> int:
    e = embed_dim
    ffn_dim = args[12].shape[0]  # ffn_weight_1: (F, E)
    macs = 0
    for b, n in _sequence_groups(src):
        macs += b * (4 * n * e * e + 2 * n * n * e + 2 * n * e * ffn_dim)
    return 2 * macs


_CONV_GENERIC = ("convolution", "_convolution", "convolution_overrideable")
_CONV_PLAIN = (
    "cudnn_convolution",
    "cudnn_convolution_relu",
    "cudnn_convolution_add_relu",
    "mkldnn_convolution",
    "miopen_convolution",
    "miopen_depthwise_convolution",
    "_conv_depthwise2d",
    "conv_depthwise3d",
    "_slow_conv2d_forward",
    "slow_conv3d_forward",
    "slow_conv_dilated2d",
    "slow_conv_dilated3d",
)
_CONV_TRANSPOSED = (
    "cudnn_convolution_transpose",
    "miopen_convolution_transpose",
    "slow_conv_transpose2d",
    "slow_conv_transpose3d",
)
_SDPA_FORWARD = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps",
)
_SDPA_BACKWARD = (
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
)


def corrected_formulas() -> dict[Any, Formula]:
    """The ``custom_mapping`` for :class:`~torch.utils.flop_counter.FlopCounterMode`.

    Returns:
        A fresh mapping from aten op packets to formulas; ops missing from the installed torch are skipped.
    """
    table: dict[str, Formula] = {
        **dict.fromkeys(_CONV_GENERIC, _conv_flops),
        **dict.fromkeys(_CONV_PLAIN, _plain_conv_flops),
        **dict.fromkeys(_CONV_TRANSPOSED, _transposed_conv_flops),
        "convolution_backward": _conv_backward_flops,
        "convolution_backward_overrideable": _conv_backward_overrideable_flops,
        "_slow_conv2d_backward": _slow_conv2d_backward_flops,
        "mv": _mv_flops,
        "addmv": _addmv_flops,
        "dot": _dot_flops,
        "vdot": _dot_flops,
        "addbmm": _addbmm_flops,
        "_addmm_activation": _addmm_activation_flops,
        **dict.fromkeys(_SDPA_FORWARD, _sdpa_flops),
        **dict.fromkeys(_SDPA_BACKWARD, _sdpa_backward_flops),
        "_scaled_dot_product_efficient_attention_backward": _sdpa_efficient_backward_flops,
        "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_overrideable_backward_flops,
        "_flash_attention_forward": _low_level_attention("bshd", backward=False, tensors=0, offsets=3),
        "_flash_attention_backward": _low_level_attention("bshd", backward=True, tensors=1, offsets=6),
        "_efficient_attention_forward": _low_level_attention("1shd", backward=False, tensors=0, offsets=4),
        "_efficient_attention_backward": _low_level_attention("1shd", backward=True, tensors=1, offsets=6),
        "_cudnn_attention_forward": _low_level_attention("bhsd", backward=False, tensors=0, offsets=4),
        "_cudnn_attention_backward": _low_level_attention("bhsd", backward=True, tensors=1, offsets=9),
        "_native_multi_head_attention": _native_mha_flops,
        "_transformer_encoder_layer_fwd": _encoder_layer_flops,
    }
    aten = torch.ops.aten
    return {getattr(aten, name): fn for name, fn in table.items() if hasattr(aten, name)}
