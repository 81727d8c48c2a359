"""Backbone factory over ``timm.create_model``: any timm name, validated up front."""

from __future__ import annotations

import difflib
from typing import Any

import timm

from tlbench.config.schema import BackboneConfig, WeightsSource
from tlbench.errors import ModelError
from tlbench.models.weights import load_weights


def check_model_name(name: str) -> None:
    """Raise :class:`ModelError` naming close matches when timm has no model ``name``."""
    if timm.is_model(name):
        return
    candidates = timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if not close:
        stem = name.split("_")[0]
        close = [c for c in candidates if c.startswith(stem)][:5]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ModelError(f"unknown backbone '{name}' (backbone.name): timm has no such model.{hint}")


def pretrained_input_size(name: str) -> int:
    """The input side the backbone's weights were trained at (timm's ``pretrained_cfg``)."""
    check_model_name(name)
    default_cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(default_cfg, "input_size", None) if default_cfg is not None else None
    if not size:
        raise ModelError(
            f"timm gives no pretrained input size for '{name}': set data.resolution=<pixels> explicitly"
        )
    return int(size[-1])


def create_backbone(cfg: BackboneConfig, *, resolution: int, keep_classifier: bool = False) -> Any:
    """Create the timm model, load its weights, and (unless asked to keep it) drop its classifier.

    Without its classifier a timm model returns pooled features (``num_features`` wide), which is
    what every strategy but ``as_is`` puts its own head on.
    """
    check_model_name(cfg.name)
    kwargs: dict[str, Any] = {}
    default_cfg = timm.models.get_pretrained_cfg(cfg.name)
    if default_cfg is not None and default_cfg.fixed_input_size:
        kwargs["img_size"] = resolution  # ViT-style models need the input size at construction
    pretrained = cfg.weights == WeightsSource.hub
    try:
        model: Any = timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained:
            raise ModelError(
                f"could not fetch hub weights for '{cfg.name}' "
                f"({type(exc).__name__}: {str(exc).split('.')[0][:160]}). "
                "Offline? Use backbone.weights=embedded (tf_efficientnet_lite0/1/2), "
                "backbone.weights=file backbone.weights_path=..., or backbone.weights=none."
            ) from None
        raise ModelError(f"timm could not build '{cfg.name}': {exc}") from None
    if cfg.weights in (WeightsSource.embedded, WeightsSource.file):
        load_weights(model, cfg)
    if not keep_classifier:
        model.reset_classifier(0)
    return model
