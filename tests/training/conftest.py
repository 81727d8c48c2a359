from __future__ import annotations

import pytest
import timm
from torch import nn


@pytest.fixture
def lite0_features() -> nn.Module:
    """Randomly initialised tf_efficientnet_lite0 without its classifier (pooled features out)."""
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)


@pytest.fixture
def tiny_backbone() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
