"""The reference the harness is measured against: a full fine-tune hand-written in plain PyTorch.

It does the same work as ``train(cfg)`` for a single-phase strategy with nothing frozen: the same
data loading (:func:`tlbench.data.load_splits`) and timm backbone with the same weights, a linear
head, AdamW with the backbone at ``lr * backbone_lr_mult`` and no weight decay on 1-D parameters,
the per-step LR schedule, the same epochs, batch size and shuffling, validation after every epoch
and one test pass; on a GPU the same bf16 autocast and channels_last memory format. What it leaves
out is exactly what the harness adds: Lightning, the module's bookkeeping, the fit meter, cost
accounting and tracking. ``harness_over_raw_loop`` is the price of those.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlbench.config.schema import RunConfig, StrategyName
from tlbench.data import load_splits
from tlbench.training.device import resolve_device, resolve_precision
from tlbench.training.fit import lr_factor
from tlbench.training.network import create_backbone, training_budget


@dataclass(frozen=True)
class RawOutcome:
    """What the hand-written loop did, so a test can check it did the harness's work."""

    seconds: float  # the whole call: data, model, training, validation, test
    optimizer_steps: int
    train_samples: int
    val_passes: int
    eval_images: int  # images through evaluation forward passes (validation + test)
    val_acc: float
    test_acc: float


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Normalize:
    """uint8 [N, C, H, W] -> float32 normalised, grey repeated to RGB (what the backbone expects)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


class _Inputs:
    """Normalise a uint8 batch; on a GPU, autocast and channels_last like the harness."""

    def __init__(self, norm: _Normalize, *, device_type: str, bf16: bool, channels_last: bool) -> None:
        self.norm = norm
        self.device_type = device_type
        self.bf16 = bf16
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.norm(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.bf16:
            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, inputs: _Inputs, batch_size: int
) -> float:
    # by hand on purpose: the reference must not run training/evaluate.py, part of what it is measured against
    model.eval()
    correct = 0
    with torch.inference_mode(), inputs.autocast():
        for start in range(0, len(labels), batch_size):
            logits = model(inputs(images[start : start + batch_size])).float()
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def _param_groups(backbone: nn.Module, head: nn.Module, cfg: RunConfig) -> list[dict[str, object]]:
    opt = cfg.optimizer
    groups: list[dict[str, object]] = []
    for module, lr in ((backbone, opt.lr * opt.backbone_lr_mult), (head, opt.lr)):
        params = [p for p in module.parameters() if p.requires_grad]
        groups.append(
            {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": opt.weight_decay}
        )
        groups.append({"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def raw_full_finetune(cfg: RunConfig) -> RawOutcome:
    """Train and evaluate like ``train(cfg)`` for ``strategy=full_finetune``, without the harness."""
    if cfg.strategy.name != StrategyName.full_finetune:
        raise ValueError(f"the raw loop is a full fine-tune; got {cfg.strategy.name.value=}")
    start = time.perf_counter()
    trainer = cfg.trainer
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    device = resolve_device(trainer.device)
    target = device.torch_device
    # Lightning's deterministic=True does this (warn-only on a GPU, as the harness asks for)
    torch.use_deterministic_algorithms(trainer.deterministic, warn_only=device.is_gpu)
    _seed(cfg.seed)
    splits = load_splits(cfg.data, seed=cfg.seed)
    trainer = training_budget(trainer, len(splits.train))  # the epochs the harness derives, too
    _seed(cfg.seed)
    backbone = create_backbone(cfg.backbone, resolution=cfg.data.size)
    head = nn.Linear(backbone.num_features, splits.num_classes)
    model = nn.Sequential(backbone, head).to(target)
    # as the harness: CNNs in channels_last on CPUs and GPUs (the bench's backbones are CNNs)
    channels_last = trainer.channels_last and device.kind in ("cpu", "cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    mean = tuple(backbone.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(backbone.pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
    inputs = _Inputs(
        _Normalize(mean, std, target),
        device_type=device.kind,
        bf16=resolve_precision(trainer.precision, device).startswith("bf16"),
        channels_last=channels_last,
    )
    train_x, train_y = splits.train.images.to(target), splits.train.labels.to(target)
    val_x, val_y = splits.val.images.to(target), splits.val.labels.to(target)
    test_x, test_y = splits.test.images.to(target), splits.test.labels.to(target)

    optimizer = torch.optim.AdamW(_param_groups(backbone, head, cfg), lr=cfg.optimizer.lr)
    n, batch = len(train_y), trainer.batch_size
    total_steps = trainer.epochs * math.ceil(n / batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(min(step, total_steps - 1), total_steps, cfg.schedule)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = samples = val_passes = eval_images = 0
    val_acc = 0.0
    for epoch in range(trainer.epochs):
        model.train()
        order = torch.randperm(n, generator=generator).to(target)
        loss_sum = torch.zeros((), device=target)
        for first in range(0, n, batch):
            index = order[first : first + batch]
            with inputs.autocast():
                loss = F.cross_entropy(model(inputs(train_x[index])).float(), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(index)
            steps, samples = steps + 1, samples + len(index)
        if not math.isfinite(float(loss_sum)):
            raise FloatingPointError(f"raw loop diverged in epoch {epoch + 1}")
        if (epoch + 1) % trainer.val_every_n_epochs == 0:
            val_acc = _accuracy(model, val_x, val_y, inputs, trainer.eval_batch_size)
            val_passes, eval_images = val_passes + 1, eval_images + len(val_y)
    test_acc = _accuracy(model, test_x, test_y, inputs, trainer.eval_batch_size)
    eval_images += len(test_y)
    return RawOutcome(
        seconds=time.perf_counter() - start,
        optimizer_steps=steps,
        train_samples=samples,
        val_passes=val_passes,
        eval_images=eval_images,
        val_acc=val_acc,
        test_acc=test_acc,
    )
