"""LP-FT as Kumar et al. (2022) describe it: a converged probe, then every layer at one small LR."""

from __future__ import annotations

import math
from typing import Any

import pytest
from lightning.pytorch.callbacks import Callback
from torch import nn

from tlbench.config import load_config
from tlbench.run import train
from tlbench.training.fit import lr_factor
from tlbench.training.network import build_model

LP_FT = [
    "data=synthetic", "trainer=quick", "strategy=lp_ft", "tracking=disabled", "trainer.count_flops=false",
]  # fmt: skip


def test_phases_are_a_converged_probe_then_everything() -> None:
    # phase 1: L-BFGS on the whole frozen backbone; phase 2: nothing frozen, trained for trainer.epochs
    cfg = load_config([*LP_FT, "trainer.epochs=3"])
    model = build_model(cfg, class_names=["a", "b", "c", "d"])
    probe, finetune = model.phases
    assert (probe.solver, probe.freeze_depth, probe.epochs) == ("lbfgs", model.groups.depth, 0)
    assert (finetune.solver, finetune.freeze_depth, finetune.epochs) == ("sgd", 0, 3)
    assert model.loop_phases == (finetune,)


class _Inspect(Callback):
    """Records, at the first fine-tune step, the optimizer's LRs, what trains and the BatchNorm modes."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.seen:
            return
        optimizer = trainer.optimizers[0]
        self.seen["lrs"] = {group["lr"] for group in optimizer.param_groups}
        self.seen["frozen"] = sum(not p.requires_grad for p in pl_module.network.parameters())
        norms = [m for m in pl_module.network.modules() if isinstance(m, nn.BatchNorm2d)]
        self.seen["bn_training"] = any(m.training for m in norms)
        self.seen["head"] = [p.detach().clone() for p in pl_module.network.head.parameters()]


def test_finetune_starts_from_the_converged_probe_at_one_small_lr() -> None:
    # the probe converged; the fine-tune phase starts from its head, every layer at optimizer.lr (no
    # larger head LR), BatchNorm normalising with the statistics the probe was fitted under
    spy = _Inspect()
    result = train(load_config([*LP_FT, "trainer.epochs=2", "optimizer.lr=1e-4"]), callbacks=[spy])
    assert result.status == "completed"
    assert result.metrics["probe/converged"] == 1.0 and result.metrics["probe/val_acc"] > 0
    assert spy.seen["frozen"] == 0
    cfg = load_config([*LP_FT, "trainer.epochs=2", "optimizer.lr=1e-4"])
    steps = 2 * math.ceil(int(result.params["n_train"]) / cfg.trainer.batch_size)
    # one LR for head and backbone (scaled by the schedule's factor at step 0)
    (lr,) = spy.seen["lrs"]
    assert lr == pytest.approx(1e-4 * lr_factor(0, steps, cfg.schedule))
    assert spy.seen["bn_training"] is False
    # the history: the probe as epoch 0, then the fine-tune epochs
    assert [r.phase for r in result.history] == ["linear_probe", "finetune", "finetune"]
    assert result.history[0].val_acc == result.metrics["probe/val_acc"]
