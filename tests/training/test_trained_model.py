"""train(..., keep_model=True): the trained network and its preprocessing reproduce the trial's test
predictions from the photo files; data.train_on_val trains on train + validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlbench.config import load_config
from tlbench.data import load_splits
from tlbench.errors import ConfigError
from tlbench.run import train

CLASSES = ("ants", "bees")


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """train/ val/ test/ class folders of small non-square JPEGs and PNGs; the classes differ in colour."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for split, count in (("train", 12), ("val", 4), ("test", 5)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 120, size=(30, 44, 3), dtype=np.uint8)
                pixels[..., label] += 100  # red-ish ants, green-ish bees
                suffix = ".jpg" if i % 2 else ".png"
                Image.fromarray(pixels).save(folder / f"{i:02d}{suffix}")
    return root


def _config(root: Path, *extra: str) -> list[str]:
    return [
        "data=imagefolder", f"data.root={root}", "data.resolution=24", "backbone=random_init",
        "backbone.name=test_efficientnet", "strategy=scratch", "trainer.epochs=8", "trainer.min_steps=null",
        "trainer.val_checks=null", "trainer.batch_size=8", "trainer.early_stopping=false",
        "tracking=disabled", "trainer.compile=false", "optimizer.lr=3e-3", *extra,
    ]  # fmt: skip


def test_kept_model_reproduces_the_trials_test_predictions_from_the_files(photo_folder: Path) -> None:
    result = train(load_config(_config(photo_folder)), keep_model=True)
    model = result.model
    assert result.completed and model is not None
    assert model.class_names == list(CLASSES) and model.resolution == 24
    network = model.network
    assert not network.training and all(p.device.type == "cpu" for p in network.parameters())
    assert all(p.is_contiguous() for p in network.parameters())  # plain NCHW, not channels_last
    # the test split's files in the split's order (classes sorted, files sorted within a class)
    files = [path for name in CLASSES for path in sorted((photo_folder / "test" / name).iterdir())]
    cfg = load_config(_config(photo_folder))
    assert [CLASSES.index(p.parent.name) for p in files] == load_splits(cfg.data, seed=0).test.labels.tolist()
    with torch.inference_mode():
        from_bytes = network(model.preprocess([p.read_bytes() for p in files])).argmax(dim=1).tolist()
        from_pil = network(model.preprocess([Image.open(p) for p in files])).argmax(dim=1).tolist()
    # encoded bytes and freshly opened images decode as the dataset did: the trial's own predictions
    assert from_bytes == result.test_predictions == from_pil


@pytest.mark.parametrize(
    "extra",
    [
        [],  # scratch in the loop
        # L-BFGS probe on the embedded Lite0 (a group choice does not undo the base's backbone.name)
        [
            "strategy=linear_probe",
            "backbone=efficientnet_lite0",
            "backbone.name=tf_efficientnet_lite0",
            "strategy.probe.l2=0.001",
        ],
    ],
)
def test_train_on_val_trains_on_both_and_validates_nothing(photo_folder: Path, extra: list[str]) -> None:
    result = train(load_config(_config(photo_folder, "data.train_on_val=true", *extra)))
    assert result.completed
    assert result.params["n_train"] == 2 * 12 + 2 * 4  # train/ and val/ together
    assert "val/acc" not in result.metrics and "test/acc" in result.metrics
    assert all(r.val_acc is None for r in result.history)  # no validation pass during the fit
    assert result.model is None  # keep_model was not asked for


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["trainer.early_stopping=true"], "set trainer.early_stopping=false"),
        (
            ["strategy=linear_probe", "backbone=efficientnet_lite0"],
            "strategy.probe.l2=<the chosen run's probe/l2>",
        ),
        (["strategy=lp_ft", "backbone=efficientnet_lite0"], "strategy.probe.l2"),
    ],
)
def test_train_on_val_refuses_a_config_that_would_choose_on_validation(
    photo_folder: Path, extra: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"data\.train_on_val=true trains on the validation split") as info:
        load_config(_config(photo_folder, "data.train_on_val=true", *extra))
    assert message in str(info.value)


def test_train_on_val_accepts_fixed_choices(photo_folder: Path) -> None:
    # the probe's L2 given, no early stopping: nothing left to choose
    cfg = load_config(_config(photo_folder, "data.train_on_val=true", "strategy=linear_probe",
                              "backbone=efficientnet_lite0", "strategy.probe.l2=0.001"))  # fmt: skip
    assert cfg.data.train_on_val and cfg.strategy.probe.l2 == 0.001
