"""L2-SP (Li et al., 2018): fine-tuned weights are pulled back towards their pretrained values.

The training objective becomes ``loss + alpha/2 * ||w - w0||^2`` over the backbone's parameters that
train (``w0``: their values when the model was built, i.e. the pretrained weights). As in the paper,
the backbone then gets no plain weight decay (:class:`tlbench.models.freeze.ParamGroups` ``decay``):
decaying towards zero would pull against the pull towards ``w0``. The new head keeps the ordinary
``optimizer.weight_decay`` (the paper's ``beta/2 * ||w_head||^2``; decoupled in AdamW). The paper's
setting is ``alpha = 0.1``, ``beta = 0.01``, with SGD.

Cost: one subtraction, square and sum per weight forward and about as much backward -- a few FLOPs per
backbone parameter per step (lite0: ~3.4 M parameters, ~15 MFLOPs a step, against ~3 GFLOPs for a
batch of 64 at 32 px). It is elementwise work, which ``cost/train_flops`` does not count
(:mod:`tlbench.cost.flops`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class L2SP:
    """``penalty()`` = ``alpha/2 * sum ||w - w0||^2`` over ``backbone``'s parameters that require grad.

    The reference ``w0`` is copied at construction (build the penalty before training starts) and
    follows each parameter to its device and dtype on first use. Frozen parameters are skipped: they
    equal ``w0`` and cost nothing.
    """

    def __init__(self, backbone: nn.Module, *, alpha: float) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha=}")
        self.alpha = alpha
        self._pairs = [(p, p.detach().clone()) for p in backbone.parameters()]

    def __call__(self) -> Tensor:
        total: Tensor | None = None
        for index, (param, start) in enumerate(self._pairs):
            if not param.requires_grad:
                continue
            if start.device != param.device or start.dtype != param.dtype:
                start = start.to(device=param.device, dtype=param.dtype)
                self._pairs[index] = (param, start)
            term = (param - start).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            device = self._pairs[0][0].device if self._pairs else None
            return torch.zeros((), device=device)
        return 0.5 * self.alpha * total
