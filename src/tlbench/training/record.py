"""What a trial logs: the tracking contract's params, tags and metrics, built from plain values."""

from __future__ import annotations

import platform
from typing import Any

import torch

import tlbench
from tlbench.config.schema import RunConfig
from tlbench.strategies import PROBE_PHASE
from tlbench.training.prepare import PreparedTrial

MLFLOW_STATUS = {"completed": "FINISHED", "pruned": "KILLED"}  # anything else ("failed: …") -> FAILED


def mlflow_status(status: str) -> str:
    return MLFLOW_STATUS.get(status, "FAILED")


def trial_params(prepared: PreparedTrial) -> dict[str, Any]:
    cfg: RunConfig = prepared.cfg
    model, splits = prepared.model, prepared.splits
    probe = next((p for p in model.phases if p.name == PROBE_PHASE), None)
    return {
        # the tracking contract
        "strategy": cfg.strategy.name.value,
        "backbone": cfg.backbone.name,
        "weights": model.weights.value,
        "freeze_depth": model.freeze_depth,
        "n_per_class": cfg.data.n_per_class if cfg.data.n_per_class is not None else "all",
        "lr": cfg.optimizer.lr,
        "schedule": cfg.schedule.name.value,
        "seed": cfg.seed,
        "dataset": cfg.data.name.value,
        "resolution": cfg.data.resolution,
        "epochs": 0 if not model.phases else sum(p.epochs for p in model.phases),
        # the rest of what makes the result reproducible
        "freeze_groups": model.groups.depth,
        "probe_solver": (probe.solver if probe is not None else ""),
        "min_steps": cfg.trainer.min_steps or "",
        "val_every_n_epochs": cfg.trainer.val_every_n_epochs,
        "head": cfg.strategy.head.type.value,
        "optimizer": cfg.optimizer.name.value,
        "weight_decay": cfg.optimizer.weight_decay,
        "backbone_lr_mult": cfg.optimizer.backbone_lr_mult,
        "layer_decay": cfg.optimizer.layer_decay,
        "batch_size": cfg.trainer.batch_size,
        "precision": prepared.precision,
        "augment": cfg.data.augment,
        "split_seed": cfg.data.split_seed,
        "data_root": cfg.data.root or "",
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "n_classes": splits.num_classes,
        "data_fingerprint": splits.fingerprint,
    }


def trial_tags(prepared: PreparedTrial) -> dict[str, str]:
    device = prepared.device
    return {
        "device": device.name,
        "device_count": str(device.count),
        "device_model": device.model,
        "strategy": prepared.cfg.strategy.name.value,
        "n_per_class": str(
            prepared.cfg.data.n_per_class if prepared.cfg.data.n_per_class is not None else "all"
        ),
        "channels_last": str(prepared.channels_last).lower(),
        "tlbench_version": tlbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **prepared.cfg.tags,
    }
