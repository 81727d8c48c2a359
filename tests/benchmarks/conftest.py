"""A tiny timm EfficientNet with its weights in a local file: the bench's machinery in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """Overrides selecting timm's ``test_efficientnet`` (6 freeze groups), weights from a file."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    return ("backbone.name=test_efficientnet", "backbone.weights=file", f"backbone.weights_path={Path(path)}")
