"""Pruning: the Lightning callback that reports validation accuracy, and the rules around the pruner.

The decision for epoch e is taken when epoch e+1 starts, not inside validation: the epoch's record
(and its MLflow curve point) is complete by then, and no training work separates the two moments.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState

from tlbench.errors import TrialPruned
from tlbench.sweep.protocol import is_counted

MONITOR = "val/acc"


# Not optuna_integration.PyTorchLightningPruningCallback: it decides inside on_validation_end, before
# the epoch's record is complete; FairPruner's protocol defers the decision to the next epoch start.
class OptunaPruning(Callback):
    """``trial.report(val/acc, step)`` after each validation; raise :class:`TrialPruned` when told to.

    The step is the pruner's resource. With ``trainer.val_checks`` set (the step budget: epochs
    derived per data size), it is the fraction of the fit done, in units of ``1 / val_checks``:
    ``floor(epoch × val_checks / epochs)``, so a rung means the same share of the budget at 5 and at
    500 images per class (a validation that does not reach the next unit is not reported). Without
    ``val_checks`` it is the epoch.
    """

    def __init__(
        self, trial: optuna.trial.Trial, *, monitor: str = MONITOR, val_checks: int | None = None
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.val_checks = val_checks
        self.last_step: int | None = None  # reported, not yet decided on
        self.reported = 0  # the last step reported
        self.last_epoch = 0

    def step(self, epoch: int, max_epochs: int) -> int:
        if not self.val_checks or max_epochs < 1:
            return epoch
        return epoch * self.val_checks // max_epochs

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = int(trainer.current_epoch) + 1
        step = self.step(epoch, int(trainer.max_epochs or 0))
        if step <= self.reported:
            return
        self.trial.report(float(value), step=step)
        self.reported, self.last_step, self.last_epoch = step, step, epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.last_step is None:  # nothing new was reported since the last decision
            return
        step, self.last_step = self.last_step, None
        if self.trial.should_prune():
            unit = f"{step}/{self.val_checks} of the budget" if self.val_checks else f"epoch {step}"
            raise TrialPruned(f"pruned after {unit} (epoch {self.last_epoch})", epoch=self.last_epoch)


class _CountedTrialsView:
    """The study as the pruner should see it: without the trials that do not count.

    A crashed or killed trial's intermediate values would otherwise stay in the successive-halving
    rungs and prune the very trial that redoes its work.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.state != TrialState.FAIL or is_counted(t)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class FairPruner(optuna.pruners.BasePruner):
    """Prune as ``inner`` does, over counted trials only, and never before the cell has a completed trial.

    The second rule guarantees every cell a result to confirm in the final phase: with a handful of
    trials per cell, successive halving would otherwise be free to prune them all.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        # Always ask the inner pruner: it records this trial's rung values for later comparisons.
        decision = bool(self.inner.prune(_CountedTrialsView(study), trial))  # type: ignore[arg-type]
        return decision and bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
