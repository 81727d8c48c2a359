"""Early stopping within the step budget: stop on a plateau, restore the best weights, count what ran."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from tlbench.config import load_config
from tlbench.config.schema import OptimizerConfig, ScheduleConfig
from tlbench.data import BatchTransform
from tlbench.run import train
from tlbench.tracking.names import COLLAPSED_PREFIX
from tlbench.training.fit import TransferModule
from tlbench.training.network import ParamGroups, TrainPhase

from .test_network import TINY  # a tiny CNN on digits: 4 full batches of 50 an epoch

ES = [*TINY, "trainer.epochs=30", "trainer.early_stopping=true", "trainer.patience=2"]


def _module(phases: int = 1, patience: int | None = 2) -> tuple[TransferModule, nn.Module]:
    network = nn.Sequential(nn.Linear(3, 2))
    module = TransferModule(
        network,
        backbone=nn.Identity(),
        head=network,
        groups=ParamGroups(names=(), labels=()),
        phases=[TrainPhase(name=f"p{i}", freeze_depth=0, epochs=1) for i in range(phases)],
        optimizer_cfg=OptimizerConfig(),
        schedule_cfg=ScheduleConfig(),
        steps_per_epoch=1,
        check_every_step=True,
        num_classes=2,
        patience=patience,
    )
    module._trainer = SimpleNamespace(global_step=0, current_epoch=0, should_stop=False)  # type: ignore[assignment]
    return module, network


@pytest.mark.parametrize(
    ("accuracies", "stops_after", "best"),
    [
        ([0.5, 0.7, 0.7, 0.6, 0.65], 4, 0.7),  # 2 checks (patience) without a strictly higher acc: stop
        ([0.5, 0.6, 0.7, 0.8, 0.9], None, 0.9),  # always improving: never stops
        ([0.9, 0.9, 0.9], 3, 0.9),  # a plateau from the start: the first check stays the best
    ],
)
def test_stops_after_patience_checks_and_keeps_the_best_state(
    accuracies: list[float], stops_after: int | None, best: float
) -> None:
    module, network = _module(patience=2)
    stopped_at = None
    for check, acc in enumerate(accuracies, start=1):
        module.trainer.global_step = check * 10  # type: ignore[misc]
        with torch.no_grad():
            network[0].weight.fill_(acc)  # the weights carry the check that produced them
        module._early_stopping(acc, loss=1.0 - acc)
        if module.trainer.should_stop and stopped_at is None:
            stopped_at = check
    assert stopped_at == stops_after
    assert module.best is not None and module.best.val_acc == best
    first_best = accuracies.index(best) + 1
    assert module.best.step == first_best * 10  # ties keep the earlier (fewer steps) weights
    assert float(module.best.state["0.weight"].flatten()[0]) == pytest.approx(best)


class _SabotageValidation(Callback):
    """From the third epoch on, validation sees a network that answers class 0 for everything (training
    itself is untouched): validation accuracy drops below its best, so early stopping must act."""

    def __init__(self) -> None:
        self.saved: dict[str, torch.Tensor] | None = None

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch < 2:
            return
        head = pl_module.network.head
        self.saved = {k: v.clone() for k, v in head.state_dict().items()}
        with torch.no_grad():
            for name, param in head.named_parameters():
                param.zero_()
                if name.endswith("bias"):
                    param[0] = 1.0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.saved is not None:
            pl_module.network.head.load_state_dict(self.saved)
            self.saved = None


def test_a_trial_stops_early_restores_its_best_weights_and_bills_what_ran() -> None:
    result = train(load_config(ES), callbacks=[_SabotageValidation()], keep_model=True)
    assert result.status == "completed"
    history = [r for r in result.history if r.val_acc is not None]
    # epochs 1-2 healthy, 3-4 sabotaged: two checks without a gain, then stop (of a 30-epoch budget)
    assert len(result.history) == 4 and history[-1].val_acc == pytest.approx(0.1, abs=0.02)
    best = max(history, key=lambda r: r.val_acc or 0.0)
    m = result.metrics
    # the reported val/acc is the restored (best) weights', and re-measuring them gives it back
    assert m["val/acc"] == best.val_acc and m["train/best_step"] == best.epoch * 4
    assert result.model is not None
    assert _val_accuracy(result.model, ES) == pytest.approx(m["val/acc"], abs=1e-9)
    # the work that ran, not the budget: 4 epochs x 4 steps x 50 images
    assert m["train/steps"] == 16 and m["cost/train_samples"] == 16 * 50
    assert result.tags["status"] == "completed" and "collapsed" not in result.tags


def _val_accuracy(model: Any, overrides: list[str]) -> float:
    from tlbench.data import load_splits

    cfg = load_config(overrides)
    val = load_splits(cfg.data, seed=cfg.seed).val
    batch = BatchTransform(mean=model.mean, std=model.std)(val.images)
    with torch.inference_mode():
        predicted = model.network(batch).argmax(dim=1)
    return float((predicted == val.labels).float().mean())


PRETRAINED = [
    "data=synthetic", "trainer=quick", "tracking=disabled", "trainer.count_flops=false", "trainer.epochs=8",
    "trainer.early_stopping=true", "trainer.patience=2",
]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        [*PRETRAINED, "strategy=lp_ft"],  # the loop phase after the converged probe
        [*PRETRAINED, "strategy=linear_probe"],  # L-BFGS: nothing to stop, no best step
        # compiled steps, the weights restored in place (a compile: slow)
        pytest.param([*ES, "trainer.compile=true", "trainer.epochs=4"], marks=pytest.mark.slow),
        # a time limit ends the fit first (at any epoch: maybe still at chance, then flagged collapsed)
        [*ES, "trainer.max_fit_seconds=2"],
    ],
)
def test_early_stopping_works_with_every_way_of_training(overrides: list[str]) -> None:
    result = train(load_config(overrides))
    timed = "trainer.max_fit_seconds=2" in overrides
    assert result.status == "completed" or (timed and result.status.startswith(COLLAPSED_PREFIX))
    m = result.metrics
    if "strategy=linear_probe" in overrides:
        assert "train/best_step" not in m and "train/steps" not in m
        return
    validated = [r.val_acc for r in result.history if r.epoch > 0 and r.val_acc is not None]
    assert m["val/acc"] == max(validated) and 0 < m["train/best_step"] <= m["train/steps"]
