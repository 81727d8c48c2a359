"""New classifier heads put on pooled backbone features."""

from __future__ import annotations

from torch import nn

from tlbench.config.schema import HeadConfig, HeadType


def create_head(cfg: HeadConfig, *, in_features: int, num_classes: int) -> nn.Module:
    """A linear layer, or a small MLP (Linear-GELU-Dropout-Linear), with dropout in front."""
    layers: list[nn.Module] = []
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    if cfg.type == HeadType.linear:
        layers.append(nn.Linear(in_features, num_classes))
    else:
        layers += [
            nn.Linear(in_features, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, num_classes),
        ]
    return nn.Sequential(*layers)
