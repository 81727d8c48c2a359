"""Closed-form FLOP counts from layer shapes, to validate the operator-level counter.

:func:`analytic_train_step_flops` shares no counting code with :mod:`tlbench.cost.flops`, only the
definition (2 FLOPs per multiply-add, matmul-class work only, see that module): it runs one forward pass with
hooks on the supported layers, reads each layer's output shape, whether the tensor entering it
requires grad and whether its weight is trainable, and applies these formulas (``MACs`` =
multiply-adds, FLOPs = 2 * MACs):

* ``nn.Conv1d/2d/3d``: ``MACs = numel(out) * C_in/groups * prod(kernel)``; stride, padding and
  dilation enter only through the output shape.
  ``nn.ConvTranspose*d``: ``MACs = numel(in) * C_out/groups * prod(kernel)``.
* ``nn.Linear``: ``MACs = rows * in_features * out_features`` with ``rows`` the product of all
  leading dims.
* For both, backward = ``MACs`` for the input gradient if the layer's input requires grad, plus
  ``MACs`` for the weight gradient if the weight is trainable (bias gradients are sums: not counted).
* Attention products of ``B`` sequences, ``L`` queries, ``S`` keys, total width ``E = heads * head_dim``:
  scores and values each ``MACs = B * L * S * E``. Backward: ``dP = dO @ v^T`` (one ``B*L*S*E``)
  if q or k requires grad, ``dV = p^T @ dO`` if v does, ``dQ = dS @ k`` if q does, ``dK = dS^T @ q``
  if k does -- the exact products autograd runs for eager attention.
* ``timm`` ``Attention`` (ViT): only the two products above; its ``qkv`` / ``proj`` are ``nn.Linear``
  and are counted by their own hooks. q/k/v require grad if ``x`` does or ``qkv`` (or the q/k norm)
  has trainable parameters.
* ``nn.MultiheadAttention``: its projections are applied functionally, so the hook counts them:
  q ``B*L*E*E``, k ``B*S*E*kdim``, v ``B*S*E*vdim``, output ``B*L*E*E``, each with input/weight
  gradients as for ``Linear``; ``S`` grows by one for ``bias_k`` and for ``add_zero_attn``.

* peft LoRA layers (``strategy=lora``) need no formula of their own: the frozen ``base_layer`` and the
  adapter's ``lora_A`` / ``lora_B`` are plain ``nn.Conv2d`` / ``nn.Linear`` modules, each counted by its
  own hook with the rules above (``lora_A`` reads the adapter dropout's output, which requires grad
  exactly when the layer's input does). A merged layer runs its base layer alone.

Only these layers are counted; a model doing matmul work elsewhere (functional matmuls, other
attention classes) is under-counted here by design -- this is a validator, not the production counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from timm.layers import Attention as TimmAttention
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tlbench.cost.flops import StepFlops, shadow_copy


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
