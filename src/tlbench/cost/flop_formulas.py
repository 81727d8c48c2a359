"""Corrected FLOP formulas for ``torch.utils.flop_counter.FlopCounterMode``.

The stock registry of the installed torch miscounts grouped-convolution backward and does not know
the CPU flash attention kernel. The formulas here replace or add exactly the entries the supported
backbones (``conf/backbone/*.yaml``: EfficientNet-Lite0/1/2, ResNet-18, ViT-Tiny) reach (see
:mod:`tlbench.cost.flops` for the definition of what is counted, the measured gaps, and how the set
was found). Every formula follows one convention:

* one multiply-add = 2 FLOPs; only matmul-class work is counted;
* a convolution does ``MACs = numel(output) * prod(weight.shape[1:])`` (``numel(input)`` for a
  transposed convolution), which already accounts for ``groups``; its input gradient and its weight
  gradient each cost the same MACs again, and each is counted only when ``output_mask`` asks for it;
* attention does two products, scores ``q @ k^T`` and values ``p @ v``; its backward does four
  (``dP = dO @ v^T``, ``dV = p^T @ dO``, ``dQ = dS @ k``, ``dK = dS^T @ q``), the count of the eager
  math path. Causal masking and ``scale`` do not change the count (upper bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

import torch

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
