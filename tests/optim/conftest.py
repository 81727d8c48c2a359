from __future__ import annotations

import pytest
import timm
from torch import nn


@pytest.fixture
def tiny_backbone() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
