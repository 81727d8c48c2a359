"""Step 4 of a trial: accuracy and loss on validation and test (inference mode, device-resident data)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.cost.device import autocast_context
from tlbench.training.fit import FitOutcome
from tlbench.training.prepare import PreparedTrial


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


def evaluate_trial(prepared: PreparedTrial, outcome: FitOutcome) -> TrialEvaluation:
    """A completed trial: val (the last epoch's, when it validated; else re-run) and test. A pruned or
    failed one keeps its last validation accuracy and is not tested."""
    cfg, history, inputs = prepared.cfg, outcome.progress.history, outcome.inputs
    if inputs is None:  # failed before any input existed
        return TrialEvaluation({}, [], eval_images=0)
    metrics: dict[str, float] = {}
    predictions: list[int] = []
    last = history[-1] if history else None
    rerun = outcome.status == "completed" and (last is None or last.val_acc is None or last.val_loss is None)
    if outcome.status == "completed":
        if last is not None and not rerun:
            metrics["val/acc"], metrics["val/loss"] = last.val_acc or 0.0, last.val_loss or 0.0
        for split in ("val", "test") if rerun else ("test",):
            loader = inputs.loader(split, batch_size=cfg.trainer.eval_batch_size, seed=cfg.seed)
            result = evaluate(
                inputs.network, loader, device_type=prepared.device.kind, precision=prepared.precision
            )
            metrics[f"{split}/acc"], metrics[f"{split}/loss"] = result.accuracy, result.loss
            if split == "test":
                predictions = result.predicted
    elif any(r.val_acc is not None for r in history):
        metrics["val/acc"] = [r.val_acc for r in history if r.val_acc is not None][-1] or 0.0
    n_test = len(prepared.splits.test) if outcome.status == "completed" else 0
    # The probe's validation (epoch 0) ran on extracted features, already counted as extraction.
    val_passes = sum(1 for r in history if r.epoch > 0 and r.val_acc is not None) + int(rerun)
    return TrialEvaluation(metrics, predictions, eval_images=val_passes * len(prepared.splits.val) + n_test)
