from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cases import Run
from benchmarks.loaded import competing_load, loaded_result
from benchmarks.timing import Sample

REPO = Path(__file__).resolve().parents[2]


def _run(wall: float, *, hours: float | None, fit: float | None = None, rule: str = "cpu") -> Run:
    info: dict[str, Any] = {
        "device_hours": hours,
        "fit_seconds": fit or wall * 0.9,
        "device_hours_rule": rule,
    }
    return Run(Sample(wall_s=wall, cpu_s=wall), info)


def test_loaded_ratio_is_the_median_of_pairs_and_cost_compares_logged_device_hours() -> None:
    # walls 20/10, 30/10, 21/11 -> per pair 2.0, 3.0, 1.91: median 2.0 (the disturbed pair does not move it)
    alone = [_run(10.0, hours=1.0), _run(10.0, hours=1.0), _run(11.0, hours=1.0)]
    loaded = [_run(20.0, hours=1.1), _run(30.0, hours=2.0), _run(21.0, hours=0.9)]
    trial, cost = loaded_result(alone, loaded, config={"torch_threads": 2})
    assert trial.name == "trial_loaded_over_alone" and trial.value == pytest.approx(2.0)
    assert trial.passed is True  # target <= 2.3
    assert trial.details["ideal"] == 2.0
    # logged device-hours per pair 1.1, 2.0, 0.9 -> median 1.1, inside 0.8..1.25
    assert cost.name == "cost_loaded_over_alone" and cost.value == pytest.approx(1.1)
    assert cost.details["per_pair"] == pytest.approx([1.1, 2.0, 0.9])
    assert cost.passed is True
    assert cost.details["device_hours_rule"] == ["cpu"]  # which rule the trials said they used


def test_a_wall_clock_cost_fails_the_cost_target() -> None:
    # device-hours that follow the wall clock double under load: 2.0 is outside 0.8..1.25
    alone = [_run(10.0, hours=10.0, rule="wall"), _run(10.0, hours=10.0, rule="wall")]
    loaded = [_run(20.0, hours=20.0, rule="wall"), _run(21.0, hours=21.0, rule="wall")]
    trial, cost = loaded_result(alone, loaded, config={})
    assert cost.value == pytest.approx(2.05) and cost.passed is False
    assert trial.value == pytest.approx(2.05) and trial.passed is True  # 2.05 <= 2.3


def test_spinning_threads_fail_the_speed_target() -> None:
    # the 3.3x: threads waiting on each other under load
    trial, _ = loaded_result([_run(1.12, hours=1.0)], [_run(3.72, hours=1.0)], config={})
    assert trial.value == pytest.approx(3.72 / 1.12) and trial.passed is False


def test_trials_that_tag_no_rule_are_reported_as_untagged() -> None:
    # before the trial tags device_hours_rule, the detail says so instead of "None"
    alone, loaded = [Run(Sample(1.0, 1.0), {"device_hours": 1.0, "fit_seconds": 1.0})], [_run(2.0, hours=2.0)]
    _, cost = loaded_result(alone, loaded, config={})
    assert cost.details["device_hours_rule"] == ["cpu", "untagged"]


def test_a_run_without_logged_device_hours_is_an_error() -> None:
    with pytest.raises(ValueError, match="cost/device_hours"):
        loaded_result([_run(1.0, hours=None)], [_run(2.0, hours=1.0)], config={})


def test_competing_load_spins_one_process_per_core_and_stops_them(tmp_path: Path) -> None:
    # the children run (they use CPU) while the block runs, and are gone after it
    before = os.times()
    with competing_load(2) as pids:
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        time.sleep(0.5)
    after = os.times()
    assert not any(_alive(pid) for pid in pids)
    used = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    assert used > 0.05  # they spun (shared cores: well under 2 x 0.5 s on a busy machine)


def test_competing_load_needs_a_process() -> None:
    with pytest.raises(ValueError, match="processes"), competing_load(0):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Prints OMP_WAIT_POLICY at the moment torch is first imported and stops there (nothing heavy runs);
# if the entry never imports torch, prints it after the entry returns.
_SPY = """
import os, sys
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stdout.write(os.environ.get("OMP_WAIT_POLICY", "unset") + "\\n")
            sys.stdout.flush()
            os._exit(0)
sys.meta_path.insert(0, Spy())
from benchmarks.cli import main
main(["--repeats", "0"])
print(os.environ.get("OMP_WAIT_POLICY", "unset"))
"""


@pytest.mark.parametrize(("user", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_bench_entry_sets_passive_waiting_before_torch_loads(user: str | None, seen: str) -> None:
    # python -m benchmarks: torch's OpenMP runtime starts with PASSIVE waiting, unless the user chose a policy
    import tlbench

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(tlbench.__file__).parents[1]), str(REPO)])
    if user:
        env["OMP_WAIT_POLICY"] = user
    result = subprocess.run([sys.executable, "-c", _SPY], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.stdout.split() == [seen], result.stderr
