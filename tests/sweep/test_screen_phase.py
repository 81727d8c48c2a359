"""The screen as the study's first phase: only the top backbones are trained, the others recorded why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from tlbench.commands.sweep import main as sweep_main
from tlbench.errors import ConfigError
from tlbench.sweep.screen_phase import rank, reasons
from tlbench.sweep.spec import parse_sweep
from tlbench.tracking import MlflowRun, names

from .conftest import TINY_BASE, SweepWriter

SCREENED: dict[str, Any] = {
    "factors": {"backbone": ["efficientnet_lite0", "resnet18", "vit_tiny"]},
    "search": {"optimizer.lr": {"low": 1e-3, "high": 0.1}},
    "budget": {"trials_per_cell": 1},
    "final": {"seeds": [1]},
    "screen": {"keep": 1, "score": "logme"},
}


@pytest.mark.parametrize(
    ("screen", "factors", "message"),
    [
        ({"keep": 4}, None, "screen.keep (4) is larger than the 3 backbones of the backbone factor"),
        ({"keep": 0}, None, "screen.keep must be an integer >= 1, got 0"),
        ({"keep": 1, "score": "accuracy"}, None, "screen.score must be one of logme, knn_loo, knn, probe_cv"),
        ({"keep": 1}, {"strategy": ["linear_probe", "partial"]}, "this sweep has no 'backbone' factor"),
    ],
)
def test_a_bad_screen_is_one_line_before_anything_runs(
    screen: dict[str, Any], factors: dict[str, Any] | None, message: str
) -> None:
    data = {**SCREENED, "base": TINY_BASE, "screen": screen, **({"factors": factors} if factors else {})}
    with pytest.raises(ConfigError) as info:
        parse_sweep(data, name="bad")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_ranking_puts_the_best_first_and_an_unknown_score_last() -> None:
    # higher is better; NaN (a score that could not be computed) last; ties keep the factor's order
    ranked = rank([("a", 0.5), ("b", math.nan), ("c", 0.9), ("d", 0.5)])
    assert [name for name, _ in ranked] == ["c", "a", "d", "b"]
    why = reasons(ranked, keep=2, score="logme")
    assert why["c"] == (True, "rank 1 of 4 by logme (0.9): in the top 2, trained")
    assert why["d"] == (False, "rank 3 of 4 by logme (0.5): below the top 2, not trained")


@dataclass
class _Result:
    score: float
    run_id: str

    def value(self, name: str) -> float:
        return self.score


def test_the_screen_runs_first_and_only_the_kept_backbones_train(
    write_sweep: SweepWriter, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a faked screen (one role=screen run per backbone) ranks lite0 first: only its cells train, every
    # screen run says why it was kept or dropped; a resumed study does not screen again
    calls: list[list[str]] = []

    def fake_screen(overrides: list[str], backbones: list[str], **kwargs: Any) -> list[_Result]:
        calls.append(list(backbones))
        assert kwargs["parent_run_id"] and kwargs["experiment"] == "screened"
        scores = {"efficientnet_lite0": 2.0, "resnet18": 1.0, "vit_tiny": -1.0}
        out = []
        for backbone in backbones:
            where = {"tracking_uri": kwargs["tracking_uri"], "parent_run_id": kwargs["parent_run_id"]}
            tags = {names.ROLE: names.SCREEN}
            run = MlflowRun.start(
                experiment=kwargs["experiment"], run_name=f"screen:{backbone}", tags=tags, **where
            )
            run.end("FINISHED")
            out.append(_Result(scores[backbone], run.run_id))
        return out

    monkeypatch.setattr("tlbench.screen.screen.run_screen", fake_screen)
    sweep = str(write_sweep("screened", **SCREENED))
    assert sweep_main(["--sweep", sweep]) == 0
    study = reader("screened")
    screens = {r.info.run_name: r.data.tags for r in study.children(names.SCREEN)}
    assert screens["screen:efficientnet_lite0"][names.SCREEN_KEPT] == "true"
    assert screens["screen:resnet18"][names.SCREEN_KEPT] == "false"
    assert (
        screens["screen:vit_tiny"][names.SCREEN_REASON]
        == "rank 3 of 3 by logme (-1): below the top 1, not trained"
    )
    trained = {r.data.tags[names.CELL] for r in study.children() if r.data.tags[names.ROLE] != names.SCREEN}
    assert trained == {"backbone=efficientnet_lite0"}
    assert sweep_main(["--sweep", sweep]) == 0  # resumed: complete, and screened once
    assert calls == [["efficientnet_lite0", "resnet18", "vit_tiny"]]
