"""Collapse is a failure: a result within noise of chance, or a training loss that ends above its start."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tlbench.config import load_config
from tlbench.run import train
from tlbench.tracking import names as N
from tlbench.training.record import collapse_reason

from .test_network import TINY  # a tiny CNN on digits (10 classes, 360 validation images)


@pytest.mark.parametrize(
    ("val_acc", "n_val", "chance", "losses", "flag"),
    [
        (0.10, 360, 0.10, [2.3, 2.0], "within noise of chance"),  # 10 classes, at chance
        (0.11, 360, 0.10, [2.3, 2.0], "within noise of chance"),  # a hair above: still noise
        (0.15, 360, 0.10, [2.3, 2.0], None),  # clearly above chance on 360 images
        (0.60, 49, 0.50, [0.7, 0.5], "within noise of chance"),  # ants vs bees, 29/49: p = 0.13
        (0.70, 49, 0.50, [0.7, 0.5], None),  # 34/49: p = 0.004
        (0.75, 4, 0.50, [0.7, 0.5], None),  # 4 images: not even 4/4 is significant, so never flagged
        (0.50, 4, 0.50, [0.7, 0.5], None),
        (0.95, 360, 0.10, [2.3, 2.4], "training loss ended at 2.4, above its first epoch's 2.3"),
        (0.95, 360, 0.10, [2.3, 1.0, 2.31], "above its first epoch's 2.3"),  # the end, not the minimum
        (0.57, 150, 0.10, [0.569, 0.726], None),  # lp_ft's fine-tune from a converged probe: drifts, learns
        (0.32, 150, 0.10, [3.43, 5.84], "above its first epoch's 3.43 and a chance guess's 2.3"),  # lp_ft
        (0.80, 98, 0.50, [0.4, 0.75], "a chance guess's 0.693"),  # 2 classes: worse than guessing
        (0.95, 360, 0.10, [2.3], None),  # one epoch: nothing to compare
        (None, 0, 0.10, [2.3, 1.0], None),  # nothing validated (train_on_val): only the loss can tell
        (0.10, 360, 0.10, [1.0, 3.0], "; training loss"),  # both triggers, both reasons
    ],
)
def test_collapse_triggers_and_healthy_results(
    val_acc: float | None, n_val: int, chance: float, losses: list[float], flag: str | None
) -> None:
    reason = collapse_reason(val_acc=val_acc, n_val=n_val, chance=chance, losses=losses)
    if flag is None:
        assert reason is None
    else:
        assert reason is not None and flag in reason


def test_a_trial_at_chance_fails_as_collapsed_and_keeps_its_metrics(mlflow_uri: str) -> None:
    # an LR too small to learn anything: the trial fails as collapsed, in MLflow too, metrics logged
    overrides = [o for o in TINY if o != "tracking=disabled"]
    result = train(load_config([*overrides, "optimizer.lr=1e-9", "trainer.epochs=2"]))
    assert result.status.startswith(N.COLLAPSED_PREFIX) and "within noise of chance" in result.status
    assert result.tags[N.COLLAPSED] == "true" and result.tags[N.COLLAPSE_REASON] in result.status
    run = MlflowClient(mlflow_uri).get_run(result.run_id or "")
    assert run.info.status == "FAILED" and run.data.tags[N.STATUS] == result.status
    assert {N.VAL_ACC, N.TEST_ACC} <= set(run.data.metrics)  # still there for inspection
    assert not result.completed


def test_a_healthy_trial_is_not_flagged() -> None:
    # the tiny CNN learns digits: above chance, loss falling -> completed, no collapse tag
    result = train(load_config(TINY))
    assert result.status == N.COMPLETED and N.COLLAPSED not in result.tags
    assert result.metrics[N.VAL_ACC] > 0.2
