"""Step 4 of a trial: accuracy and loss on validation and test (inference mode, device-resident data)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.cost.device import autocast_context
from tlbench.data import DataSplits
from tlbench.models.module import BestWeights, EpochRecord, FitProgress
from tlbench.tracking import names as N
from tlbench.training.inputs import TrialInputs


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    samples: int
    predicted: list[int]  # argmax class per sample, in the batches' order


def evaluate(
    network: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device_type: str,
    precision: str,
) -> EvalResult:
    # Counted by hand, not with torchmetrics: the per-image predictions are needed anyway (paired
    # comparisons), and the accuracy stays the exact ratio correct / seen that they reproduce.
    was_training = network.training
    network.eval()
    correct = 0
    loss_sum = 0.0
    seen = 0
    predicted: list[torch.Tensor] = []
    with torch.inference_mode(), autocast_context(device_type, precision):
        for x, y in batches:
            logits = network(x).float()
            predicted.append(logits.argmax(dim=1))
            correct += int((predicted[-1] == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += int(y.shape[0])
    network.train(was_training)
    if seen == 0:
        raise ValueError("evaluate() got an empty split")
    labels = [int(v) for v in torch.cat(predicted).tolist()]
    return EvalResult(accuracy=correct / seen, loss=loss_sum / seen, samples=seen, predicted=labels)


@dataclass(frozen=True)
class TrialEvaluation:
    metrics: dict[str, float]  # val/acc, val/loss, test/acc, test/loss: those measured
    predictions: list[int]  # per test image, in the split's order (completed trials)
    eval_images: int  # images through evaluation forward passes: per-epoch val, a final val, test
    best_step: int | None = None  # early stopping: the optimizer step whose weights were evaluated
    collapse: str | None = None  # why the result is degenerate (see collapse_reason); None: healthy


def evaluate_trial(
    inputs: TrialInputs | None,
    splits: DataSplits,
    *,
    status: str,
    progress: FitProgress,
    best: BestWeights | None,
    batch_size: int,
    seed: int,
    device_type: str,
    precision: str,
) -> TrialEvaluation:
    """A completed trial: val (of the weights early stopping chose, ``best``, restored first), then
    test, and the collapse check. A pruned or failed one keeps its last validation accuracy and is not
    tested. ``inputs``: what the fit trained on (None: it failed before they existed).

    With ``data.train_on_val`` the validation images are training images: nothing is validated.
    """
    history = progress.history
    if inputs is None:  # failed before any input existed
        return TrialEvaluation({}, [], eval_images=0)
    # The probe's validation (epoch 0) ran on extracted features, already counted as extraction.
    val_passes = sum(1 for r in history if r.epoch > 0 and r.val_acc is not None)
    validated = [r.val_acc for r in history if r.val_acc is not None]
    if status != N.COMPLETED:
        last_val = {"val/acc": validated[-1]} if validated and not splits.val_in_train else {}
        return TrialEvaluation(last_val, [], eval_images=val_passes * len(splits.val))

    def run(split: str) -> EvalResult:
        loader = inputs.loader(split, batch_size=batch_size, seed=seed)
        return evaluate(inputs.network, loader, device_type=device_type, precision=precision)

    metrics: dict[str, float] = {}
    best_step: int | None = None
    if not splits.val_in_train:
        (metrics["val/acc"], metrics["val/loss"]), extra, best_step = _chosen_weights(
            inputs.network, progress, best, run
        )
        val_passes += extra
    test = run("test")
    metrics["test/acc"], metrics["test/loss"] = test.accuracy, test.loss
    chance = float(splits.val.labels.bincount().max()) / max(1, len(splits.val))
    collapse = collapse_reason(
        val_acc=metrics.get("val/acc"),
        n_val=len(splits.val),
        chance=chance,
        losses=_last_phase_losses(history),
    )
    return TrialEvaluation(
        metrics,
        test.predicted,
        eval_images=val_passes * len(splits.val) + len(splits.test),
        best_step=best_step,
        collapse=collapse,
    )


def _chosen_weights(
    network: nn.Module, progress: FitProgress, best: BestWeights | None, run: Callable[[str], EvalResult]
) -> tuple[tuple[float, float], int, int | None]:
    """((val/acc, val/loss) of the weights evaluated, extra validation passes, their step or None).

    Without early stopping: the final weights (validated again when the last epoch was not).
    With it: the best validated weights, restored into ``network``, unless the final weights, when the
    fit did not validate them, turn out strictly better.
    """
    last = progress.history[-1] if progress.history else None
    extra = 0
    if last is not None and last.val_acc is not None and last.val_loss is not None:
        final = (last.val_acc, last.val_loss)
    else:
        result = run("val")
        final, extra = (result.accuracy, result.loss), 1
    if best is None:
        return final, extra, None
    if final[0] > best.val_acc:
        return final, extra, progress.steps
    network.load_state_dict(best.state)
    return (best.val_acc, best.val_loss), extra, best.step


def _last_phase_losses(history: list[EpochRecord]) -> list[float]:
    """Per-epoch training losses of the last phase trained in the loop (a probe's fit is one point)."""
    loop = [r for r in history if r.epoch > 0]
    return [r.train_loss for r in loop if r.phase == loop[-1].phase] if loop else []


# One-sided level of the "better than chance" test: a validation accuracy whose p-value is above it
# is within noise of chance.
COLLAPSE_ALPHA = 0.05


def collapse_reason(
    *,
    val_acc: float | None,
    n_val: int,
    chance: float,
    losses: Sequence[float],
    alpha: float = COLLAPSE_ALPHA,
) -> str | None:
    """Why a completed trial's result is degenerate, or None when it is not.

    Two triggers:

    - **validation accuracy within noise of chance**: an exact one-sided binomial test of the
      ``round(val_acc * n_val)`` correct answers against ``chance`` (what always answering the
      validation set's largest class scores: 1/classes on a balanced set) cannot reject "no better
      than chance" at ``alpha``. A validation set so small that even a perfect score would not be
      significant (4 images of 2 classes: p = 0.0625) cannot tell, and is never flagged.
    - **training loss ends above where it started, and above a guess's**: the last epoch's mean
      training loss of the last phase exceeds its first epoch's (which already includes its first
      steps) and the cross-entropy of answering with chance's probabilities, ``-ln(chance)`` (ln 10
      on 10 balanced classes). The second condition spares a fit that starts from a converged
      probe (lp_ft's fine-tune phase starts near 0.5) and drifts up a little while still
      classifying: its accuracy is what the first trigger judges.
    """
    from scipy.stats import binomtest

    reasons = []
    if val_acc is not None and n_val > 0 and 0.0 < chance < 1.0:
        correct = round(val_acc * n_val)
        if binomtest(n_val, n_val, chance, alternative="greater").pvalue <= alpha:  # the test can tell
            p_value = binomtest(correct, n_val, chance, alternative="greater").pvalue
            if p_value > alpha:
                reasons.append(
                    f"val/acc {val_acc:.3f} is within noise of chance {chance:.3f} "
                    f"({correct}/{n_val} correct, one-sided binomial p={p_value:.2g} > {alpha:g})"
                )
    guess = -math.log(chance) if 0.0 < chance < 1.0 else 0.0
    if len(losses) >= 2 and losses[-1] > max(losses[0], guess):
        reasons.append(
            f"training loss ended at {losses[-1]:.4g}, above its first epoch's {losses[0]:.4g} and a "
            f"chance guess's {guess:.3g}"
        )
    return "; ".join(reasons) or None
