from __future__ import annotations

import os

import pytest

from tlbench.cost.threads import WAIT_POLICY_ENV, passive_wait_default, plan_threads


@pytest.mark.parametrize(
    ("workers", "usable", "busy", "threads"),
    [
        (1, 2, 0.1, 2),  # an idle 2-core machine: both cores for one worker
        (2, 2, 0.1, 1),  # two workers share the two cores
        (1, 2, 1.0, 1),  # another process holds a core: one thread, never two waiting on each other
        (1, 2, 3.5, 1),  # saturated: still one thread
        (2, 16, 0.0, 8),
        (4, 16, 8.0, 2),
    ],
)
def test_plan_threads_fits_the_free_cores(workers: int, usable: int, busy: float, threads: int) -> None:
    plan = plan_threads(workers, usable=usable, busy=busy)
    assert plan.threads == threads
    assert f"load {busy:.1f}" in plan.reason  # the header says why


def test_plan_threads_rejects_no_workers() -> None:
    with pytest.raises(ValueError, match="workers"):
        plan_threads(0, usable=2, busy=0.0)


def test_passive_wait_respects_the_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    assert passive_wait_default() == "PASSIVE" and os.environ[WAIT_POLICY_ENV] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY_ENV, "ACTIVE")  # the user's own environment wins
    assert passive_wait_default() == "ACTIVE"
