from __future__ import annotations

import os

import pytest

from tlbench.training import threads
from tlbench.training.threads import (
    WAIT_POLICY_ENV,
    passive_wait_default,
    plan_threads,
    trial_threads,
    usable_cores,
)


@pytest.mark.parametrize(
    ("workers", "usable", "busy", "threads"),
    [
        (1, 2, 0.1, 2),  # an idle 2-core machine: both cores for one worker
        (2, 2, 0.1, 1),  # two workers share the two cores
        (1, 2, 1.0, 2),  # another process holds a core: still 2 threads (the seed's result must not move)
        (1, 2, 11.0, 2),  # saturated: the same 2 threads, waiting passively
        (3, 2, 0.0, 1),  # more workers than cores: at least one thread each
        (2, 16, 0.0, 8),
        (4, 16, 8.0, 4),
    ],
)
def test_plan_threads_splits_the_usable_cores_whatever_the_load(
    workers: int, usable: int, busy: float, threads: int
) -> None:
    plan = plan_threads(workers, usable=usable, busy=busy)
    assert plan.threads == threads
    assert f"load {busy:.1f}" in plan.reason  # the header says what the load was
    # a busy machine is named in the reason, with the waiting policy that copes with it
    assert ("busy machine" in plan.reason) == (busy >= 0.5 * usable)


def test_trial_threads_sets_torch_and_says_why() -> None:
    # a requested count wins; none: the plan, unless the process already runs fewer (a sweep worker)
    import torch

    assert trial_threads(1).threads == 1 and torch.get_num_threads() == 1
    assert trial_threads(1).reason == "trainer.num_threads"
    kept = trial_threads(None)  # 1 thread already set in this process: kept, and said so
    if usable_cores() > 1:
        assert kept.threads == 1 and kept.reason.startswith("this process's 1 thread(s)")
    torch.set_num_threads(usable_cores())
    plan = trial_threads(None)
    assert plan.threads == usable_cores() and torch.get_num_threads() == plan.threads


def test_plan_threads_rejects_no_workers() -> None:
    with pytest.raises(ValueError, match="workers"):
        plan_threads(0, usable=2, busy=0.0)


def test_passive_wait_respects_the_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    assert passive_wait_default() == "PASSIVE" and os.environ[WAIT_POLICY_ENV] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY_ENV, "ACTIVE")  # the user's own environment wins
    assert passive_wait_default() == "ACTIVE"


@pytest.mark.parametrize(
    ("gpu", "usable", "memory_gb", "expected"),
    [
        (False, 2, 24.0, 2),  # this machine: one single-threaded worker per core
        (False, 16, 12.0, 3),  # memory caps it: 4 GiB per worker
        (False, 4, 1.0, 1),  # never fewer than one
        (True, 16, 128.0, 1),  # one worker on a GPU
    ],
)
def test_auto_workers_one_per_core_as_memory_allows(
    gpu: bool, usable: int, memory_gb: float, expected: int
) -> None:
    workers, why = threads.auto_workers(gpu=gpu, usable=usable, memory_gb=memory_gb)
    assert workers == expected
    assert ("GPU" in why) == gpu and (("memory" in why) == (not gpu and expected < usable))


def test_parse_workers_takes_a_count_or_auto() -> None:
    assert threads.parse_workers("auto") is None and threads.parse_workers("3") == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="--workers"):
            threads.parse_workers(bad)


def test_sweep_workers_bad_value_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tlbench.cli import main

    assert main(["sweep", "--sweep", "smoke", "--workers", "many"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0] and "'many'" in err[0]


def test_the_sweep_resolves_auto_workers_from_the_trials_device() -> None:
    from tlbench.sweep.run import _workers

    assert _workers(3, "cpu") == (3, "--workers")
    workers, why = _workers(None, "cpu")  # what `tlbench sweep` does without --workers
    assert workers == threads.auto_workers(gpu=False)[0] and "single-threaded" in why
