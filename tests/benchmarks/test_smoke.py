"""The whole bench machinery on tiny synthetic configurations, one repeat: structure, not speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.cases import EAGER, Plan, SweepPlan
from benchmarks.report import RATIOS, check_bench_json
from benchmarks.run import run_bench

TINY = (
    "data=synthetic", "data.samples_per_class=8", "trainer.batch_size=16", "trainer.eval_batch_size=64",
    "trainer.min_steps=null", "trainer.val_checks=null", "strategy.probe.solver=sgd",  # fixed epochs
)  # fmt: skip
TINY_SWEEP = {
    "factors": {"strategy": ["linear_probe"]},
    "search": {"optimizer.lr": {"low": 1.0e-3, "high": 1.0e-1, "log": True}},
    "budget": {"trials_per_cell": 2},
    "sampler": {"name": "qmc", "seed": 0},
    "pruner": {"name": "successive_halving", "min_resource": 1, "reduction_factor": 3},
}


def _plan(sweep_file: Path, backbone: tuple[str, ...]) -> Plan:
    tiny = (*TINY, *backbone)
    sweep_base = (*tiny, "trainer.epochs=2")  # FLOPs counted: the floor ratio sums them
    return Plan(
        finetune=(*tiny, "strategy=full_finetune", "trainer.epochs=1"),
        probe=(*tiny, "strategy=linear_probe", "trainer.epochs=2"),
        partial=(*tiny, "strategy=partial", "strategy.freeze_depth=3", "trainer.epochs=1"),
        warmup={"finetune": (), "probe": ("trainer.epochs=1",), "partial": ()},
        sweep=SweepPlan(
            source=str(sweep_file), cells={"strategy": ["linear_probe"]}, base=sweep_base, repeats=1
        ),
        repeats=1,
        finetune_repeats=1,
        threads=1,
    )


def test_bench_writes_every_ratio_with_details_and_prints_a_table(
    tmp_path: Path, tiny_backbone: tuple[str, ...]
) -> None:
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(TINY_SWEEP))
    lines: list[str] = []
    out = tmp_path / "reports" / "bench.json"
    data = run_bench(_plan(sweep_file, tiny_backbone), out=out, emit=lines.append)
    check_bench_json(json.loads(out.read_text()))
    assert set(data["ratios"]) == set(RATIOS)
    assert all(isinstance(data["ratios"][name], float) for name in RATIOS), data["details"]
    details = data["details"]
    assert details["harness_over_raw_loop"]["same_work"]["raw_val_passes"] == 1
    probe = details["linear_probe_cached_speedup"]
    assert probe["feature_cache"] == ["miss"] and probe["theoretical_upper_bound"] > 1.0
    # the cached trial's seconds beyond the forward pass: its wall time minus the floor's, per pair
    over = details["linear_probe_over_one_extraction_pass"]
    runs = over["runs"]
    expected = runs["probe_cached"][0]["wall_s"] - runs["extraction_pass"][0]["wall_s"]
    assert over["seconds_over_floor"]["median"] == pytest.approx(expected)
    assert over["floor_seconds"]["median"] == pytest.approx(runs["extraction_pass"][0]["wall_s"])
    sweep = details["default_sweep_pruned_over_unpruned"]
    assert sweep["runs"][0]["unpruned"]["cells"][0]["trials"] == 2
    # the sweep's FLOPs come back from MLflow and meet the eager step's throughput in the floor ratio
    floor = details["default_sweep_wall_over_flops_floor"]
    assert floor["per_sweep"][0]["logged_flops"] == sweep["runs"][0]["pruned"]["logged_flops"] > 0
    assert floor["throughput_flop_s"] == details["eager_over_optimised"]["fit_throughput_flop_s"]["median"]
    assert details["eager_over_optimised"]["config"]["eager_overrides"] == list(EAGER)
    assert any("finetune 1/1 raw_loop" in line for line in lines)  # one progress line per measurement
    assert any(line.startswith("ratio ") for line in lines)  # the table
    assert not list(Path.cwd().glob("mlruns")) and Path.cwd() == tmp_path  # nothing left behind


def test_a_failing_measurement_leaves_its_ratio_null_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_backbone: tuple[str, ...]
) -> None:
    from benchmarks import run as bench_run

    def broken(*args: object) -> list[object]:
        raise RuntimeError("a dependency changed its interface")

    monkeypatch.setattr(bench_run, "partial_ratio", broken)
    plan = _plan(tmp_path / "none.yaml", tiny_backbone)
    data = run_bench(plan, out=None, emit=lambda _: None, only=["partial"])
    assert data["ratios"]["partial_cached_speedup"] is None
    assert "changed its interface" in data["details"]["partial_cached_speedup"]["reason"]
    assert "not measured" in data["details"]["harness_over_raw_loop"]["reason"]
    # the floor ratio says which steps it needs
    assert "eager and sweep" in data["details"]["default_sweep_wall_over_flops_floor"]["reason"]


def test_the_command_offers_every_step() -> None:
    from benchmarks.cli import STEPS as CLI_STEPS
    from benchmarks.run import STEPS

    assert CLI_STEPS == STEPS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "0"], "must be >= 1"),
        (["--threads", "-1"], "--threads must be"),
        (["--set", "trainer.chanels_last=false"], "did you mean 'trainer.channels_last'"),
    ],
)
def test_bad_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
