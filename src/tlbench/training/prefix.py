"""Split a backbone at its freeze boundary: a frozen prefix (run once, cacheable) and a trainable suffix.

Most CNN backbones in timm (EfficientNet, MobileNet, ResNet, RegNet, ...) compute ``forward(x)`` as
the composition of their child modules in registration order, with ``nn.Sequential`` stages whose
children are blocks. We flatten that chain and *verify numerically* that composing it reproduces
``backbone(x)``; models where it does not (ViTs add tokens and position embeddings) are simply not
split, and train the ordinary way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefixSplit:
    """``backbone(x) == suffix(prefix(x))``, with every parameter of ``prefix`` frozen."""

    prefix: nn.Module
    suffix: nn.Sequential
    boundary: int  # chain units in the prefix (a cache-key ingredient); -1 = the whole backbone
    units: int


def _chain(module: nn.Module) -> list[nn.Module]:
    """Children in order, descending into ``nn.Sequential`` children so stages split into blocks."""
    out: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.Sequential) and len(child) > 0:
            out.extend(_chain(child))
        else:
            out.append(child)
    return out


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def split_at_freeze_boundary(backbone: nn.Module, probe: torch.Tensor) -> PrefixSplit | None:
    """The split, or None when the backbone is not a verifiable chain or nothing is frozen.

    ``probe`` is a small normalized input batch on the backbone's device. The backbone is put in
    eval mode for the check (frozen units run in eval mode during training too) and restored.
    """
    if not _has_trainable(backbone):  # linear probe: the prefix is the whole backbone, any architecture
        return PrefixSplit(prefix=backbone, suffix=nn.Sequential(), boundary=-1, units=-1)
    units = _chain(backbone)
    boundary = next((i for i, unit in enumerate(units) if _has_trainable(unit)), len(units))
    if boundary == 0:
        return None
    prefix, suffix = nn.Sequential(*units[:boundary]), nn.Sequential(*units[boundary:])
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            expected = backbone(probe)
            composed = suffix(prefix(probe))
        same = composed.shape == expected.shape and torch.allclose(composed, expected, rtol=1e-4, atol=1e-5)
    except Exception as exc:  # a chain that cannot even run is simply not splittable
        log.debug("backbone is not a sequential chain (%s): no prefix caching", exc)
        same = False
    finally:
        backbone.train(was_training)
    if not same:
        log.info("%s does not compose as a chain of its children: no prefix caching", type(backbone).__name__)
        return None
    return PrefixSplit(prefix=prefix, suffix=suffix, boundary=boundary, units=len(units))


class SuffixNetwork(nn.Module):
    """Trains on cached prefix activations: ``head(suffix(a))``.

    The full network stays registered (``self.network``) so parameter names, freeze groups and
    eval-mode handling are the same as in uncached training; the prefix is simply never run.
    """

    def __init__(self, network: nn.Module, suffix: nn.Sequential) -> None:
        super().__init__()
        self.network = network
        self._suffix = [suffix]  # its modules are the network's own: do not register them twice

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        head: nn.Module = self.network.head  # type: ignore[assignment]
        return head(self._suffix[0](activations))
