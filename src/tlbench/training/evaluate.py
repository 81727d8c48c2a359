"""Accuracy and loss of a network over an in-memory split (inference mode, device-resident data)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    samples: int
    predicted: list[int]  # argmax class per sample, in the batches' order


def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision matching the training precision (a no-op for fp32)."""
    if precision.startswith("bf16"):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def evaluate(
    network: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device_type: str,
    precision: str,
) -> EvalResult:
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
