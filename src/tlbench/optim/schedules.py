"""LR schedules as pure functions: ``lr_factor(step, total_steps, cfg)`` -> multiplier of the peak LR."""

from __future__ import annotations

import bisect
import math

from tlbench.config.schema import ScheduleConfig, ScheduleName


def _cosine(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_factor(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based) of ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps=}")
    progress = step / total_steps
    if cfg.name == ScheduleName.constant:
        return 1.0
    if cfg.name == ScheduleName.step:
        return cfg.gamma ** bisect.bisect_right(list(cfg.milestones), progress)
    if cfg.name == ScheduleName.cosine:
        return _cosine(progress, cfg.min_factor)
    if cfg.name == ScheduleName.warmup_cosine:
        warmup = max(1, round(cfg.warmup_fraction * total_steps)) if cfg.warmup_fraction > 0 else 0
        if step < warmup:
            return (step + 1) / warmup
        return _cosine((step - warmup) / max(1, total_steps - warmup), cfg.min_factor)
    # onecycle (cosine annealing both ways, as torch's OneCycleLR): start/div -> peak -> start/final_div
    start = 1.0 / cfg.div_factor
    end = start / cfg.final_div_factor
    rise = max(1, round(cfg.pct_start * total_steps))
    if step < rise:
        return start + (1.0 - start) * (1.0 - math.cos(math.pi * step / rise)) / 2.0
    fall = (step - rise) / max(1, total_steps - rise)
    return end + (1.0 - end) * (1.0 + math.cos(math.pi * min(fall, 1.0))) / 2.0
