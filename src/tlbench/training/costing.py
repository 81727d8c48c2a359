"""Measured FLOPs of a trial's work: one training step per phase, one forward pass per evaluated image."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tlbench.cost.accounting import PhaseWork
from tlbench.cost.flops import measure_forward_flops, measure_train_step_flops
from tlbench.models.freeze import keep_frozen_in_eval, set_frozen
from tlbench.models.module import EpochRecord
from tlbench.training.prepare import PreparedTrial

_PROBE = 2  # samples per probe batch: BatchNorm in train mode needs more than one value per channel


def _probe_batch(prepared: PreparedTrial) -> tuple[torch.Tensor, torch.Tensor]:
    train = prepared.splits.train
    n = min(_PROBE, len(train))
    return prepared.transform(train=False)(train.images[:n]), train.labels[:n]


def train_step_flops_per_sample(prepared: PreparedTrial) -> list[float]:
    """FLOPs of one training sample's forward+backward in each phase, frozen layers honoured.

    Measured on a copy of the network in exactly the freeze state and train/eval modes it trains
    in; the network itself is left in the first phase's state.
    """
    model = prepared.model
    network, backbone = model.network, model.network.backbone
    x, y = _probe_batch(prepared)
    out: list[float] = []
    was_training = network.training
    for phase in model.phases:
        set_frozen(backbone, model.groups, phase.freeze_depth)
        network.train()
        keep_frozen_in_eval(network)
        out.append(measure_train_step_flops(network, x, y).total / x.shape[0])
    if model.phases:
        set_frozen(backbone, model.groups, model.phases[0].freeze_depth)
    network.train(was_training)
    return out


def forward_flops_per_sample(prepared: PreparedTrial) -> float:
    x, _ = _probe_batch(prepared)
    return measure_forward_flops(prepared.model.network, x) / x.shape[0]


def phase_work(
    prepared: PreparedTrial, samples: Sequence[int], flops_per_sample: Sequence[float]
) -> list[PhaseWork]:
    return [
        PhaseWork(name=phase.name, samples=n, flops_per_sample=f)
        for phase, n, f in zip(prepared.model.phases, samples, flops_per_sample, strict=True)
    ]


def eval_images(history: Sequence[EpochRecord], *, n_val: int, n_test: int, final_val_pass: bool) -> int:
    """Images through evaluation forward passes: per-epoch validation, a final val (if re-run), test."""
    val_passes = sum(1 for record in history if record.val_acc is not None) + int(final_val_pass)
    return val_passes * n_val + n_test
