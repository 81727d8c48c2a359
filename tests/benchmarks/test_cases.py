from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.cases import COMMON, SWEEP_CELL_DATA, Plan

DEFAULT = yaml.safe_load((Path(__file__).resolve().parents[2] / "sweeps" / "default.yaml").read_text())


def test_bench_trials_are_cells_of_the_default_sweep() -> None:
    # if sweeps/default.yaml changes, the bench's fine-tune and partial trials must follow it
    plan = Plan()
    assert set(DEFAULT["base"]) <= set(SWEEP_CELL_DATA)
    assert 5 in DEFAULT["factors"]["data.n_per_class"]
    assert {"full_finetune", "partial", "linear_probe"} <= set(DEFAULT["factors"]["strategy"])
    # shortened explicitly: the step budget is switched off and a fixed number of epochs set
    assert {"trainer.min_steps=null", "trainer.epochs=12"} <= set(plan.partial)
    assert {"trainer.min_steps=null", "trainer.epochs=8"} <= set(plan.finetune)
    assert set(DEFAULT["where"]["strategy=partial"]) <= set(plan.partial)


def test_overrides_put_warm_up_and_extras_last_so_they_win() -> None:
    plan = Plan(threads=1)
    runs = plan.overrides("finetune", "trainer.count_flops=false", warmup=True)
    assert runs[: len(plan.finetune)] == list(plan.finetune)
    assert set(COMMON) <= set(runs) and "trainer.num_threads=1" in runs
    assert runs[-1] == "trainer.epochs=1"  # Hydra: the last value of a key wins


def test_set_overrides_change_every_case_base_but_each_ratio_settings_still_win() -> None:
    from benchmarks.cases import EAGER

    plan = Plan(base_overrides=("trainer.channels_last=false", "trainer.compile=true"))
    for case in ("finetune", "probe", "partial"):
        runs = plan.overrides(case)
        assert runs[len(getattr(plan, case)) : len(getattr(plan, case)) + 2] == list(plan.base_overrides)
    eager = plan.overrides("finetune", *EAGER)
    # Hydra keeps the last value of a key: the eager side is still uncompiled
    assert [o for o in eager if o.startswith("trainer.compile=")][-1] == "trainer.compile=false"
