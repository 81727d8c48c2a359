from __future__ import annotations

import math
from typing import Any

import pytest
from lightning.pytorch.callbacks import Callback

from benchmarks.raw_loop import raw_full_finetune
from tlbench.config import load_config
from tlbench.run import train

TINY = [
    "data=synthetic",
    "data.samples_per_class=12",
    "strategy=full_finetune",
    "trainer.epochs=2",
    "trainer.min_steps=null",  # exactly trainer.epochs (the step budget is tested in tests/training)
    "trainer.val_checks=null",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "tracking=disabled",
    "trainer.count_flops=false",
    "trainer.feature_cache_dir=null",
]


class Count(Callback):
    """What Lightning did: optimizer steps and validation passes."""

    def __init__(self) -> None:
        self.steps = 0
        self.val_passes = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.steps += 1

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.val_passes += 1


def test_raw_loop_does_the_harness_work_step_for_step(tiny_backbone: tuple[str, ...]) -> None:
    # same optimizer steps, training samples, validation passes and evaluated images as train(cfg)
    cfg = load_config([*TINY, *tiny_backbone])
    counter = Count()
    result = train(cfg, callbacks=[counter])
    raw = raw_full_finetune(cfg)
    n_train, n_val, n_test = (int(result.params[k]) for k in ("n_train", "n_val", "n_test"))
    assert raw.optimizer_steps == counter.steps == cfg.trainer.epochs * math.ceil(n_train / 8)
    assert raw.train_samples == result.metrics["cost/train_samples"] == cfg.trainer.epochs * n_train
    assert raw.val_passes == counter.val_passes == cfg.trainer.epochs
    assert raw.eval_images == cfg.trainer.epochs * n_val + n_test
    assert 0.0 <= raw.test_acc <= 1.0 and raw.seconds > 0


def test_raw_loop_only_fine_tunes(tiny_backbone: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="full fine-tune"):
        raw_full_finetune(load_config([*TINY, *tiny_backbone, "strategy=linear_probe"]))
