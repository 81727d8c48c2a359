"""The device-hours rule (tlbench.training.device) and what the fit meter counts as the trial's CPU time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tlbench.training.device import (
    DeviceInfo,
    FitMeter,
    FitOutcome,
    device_hours_rule,
    device_seconds,
    timed_fit,
    trial_cost,
)

CPU = DeviceInfo(kind="cpu", name="cpu", model="test", index=None, count=1)


@pytest.mark.parametrize(
    ("kind", "wall", "cpu", "threads", "devices", "expected"),
    [
        ("cpu", 100.0, 180.0, 2, 1, 90.0),  # CPU: process CPU seconds / threads, whatever the wall clock
        ("cpu", 400.0, 180.0, 2, 1, 90.0),  # the same work under load: the wall clock moved, the cost did not
        ("cpu", 10.0, 10.0, 1, 1, 10.0),
        ("cuda", 100.0, 30.0, 8, 1, 100.0),  # GPU: wall x devices, the host's CPU time is not the cost
        ("cuda", 100.0, 30.0, 8, 2, 200.0),
        ("mps", 50.0, 5.0, 4, 1, 50.0),
    ],
)
def test_device_seconds_follow_the_rule_per_device(
    kind: str, wall: float, cpu: float, threads: int, devices: int, expected: float
) -> None:
    assert (
        device_seconds(kind, wall_seconds=wall, cpu_seconds=cpu, threads=threads, devices=devices) == expected
    )


def test_the_rule_is_stated_in_words() -> None:
    # the device_hours_rule tag says which rule and which divisor produced cost/device_hours
    assert (
        device_hours_rule("cpu", threads=2, devices=1)
        == "cpu: process CPU seconds of the fit / 2 torch thread(s) / 3600"
    )
    assert (
        device_hours_rule("cuda", threads=8, devices=1)
        == "cuda: wall seconds of the fit x 1 device(s) / 3600"
    )


def test_bad_measurements_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        device_seconds("cpu", wall_seconds=1.0, cpu_seconds=1.0, threads=0, devices=1)


def test_trial_cost_logs_wall_and_cpu_and_bills_device_hours_by_cpu() -> None:
    # a CPU trial: device-hours from CPU seconds / threads; wall and CPU seconds both logged
    outcome = FitOutcome(CPU)
    outcome.seconds, outcome.cpu_seconds, outcome.threads, outcome.peak_bytes = 400.0, 180.0, 2, 2**20
    metrics = trial_cost(outcome, train_samples=0, train_flops=0.0, eval_flops=0.0, reused_seconds=36.0)
    assert metrics["cost/device_hours"] == pytest.approx(90.0 / 3600)
    assert metrics["cost/fit_seconds"] == 400.0 and metrics["cost/fit_cpu_seconds"] == 180.0
    # a reused extraction adds the device-seconds it cost the trial that ran it
    assert metrics["cost/standalone_device_hours"] == pytest.approx(126.0 / 3600)


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds  # this thread's own CPU time
    while time.thread_time() < end:
        pass


def test_meter_counts_the_process_work_but_not_its_sampler_or_a_competing_child() -> None:
    # 0.6 CPU-s of work in the block is counted; a busy child process started alongside is not
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with FitMeter(CPU, sample_seconds=0.001) as meter:
            worker = threading.Thread(target=_spin, args=(0.3,))
            worker.start()
            _spin(0.3)
            worker.join()
        assert meter.cpu_seconds == pytest.approx(0.6, abs=0.15)
        assert meter.seconds > 0 and meter.peak_mb > 0 and meter.threads >= 1
    finally:
        competitor.kill()
        competitor.wait()


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_error_while_the_meter_starts_reaches_the_caller_as_itself(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    # A Ctrl-C landing before the fit's block runs (while the meter starts) once became contextlib's
    # "generator didn't yield" RuntimeError, and the sweep counted a crash instead of an interrupt.
    def refuse(self: FitMeter) -> FitMeter:
        raise error

    monkeypatch.setattr(FitMeter, "__enter__", refuse)
    ran = False
    with pytest.raises(error), timed_fit(CPU, timed=True):
        ran = True
    assert not ran
