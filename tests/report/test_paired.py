"""Paired comparisons on hand-built trial tables (pairing checks, known answers, the binomial fallback,
racing), and the claim they rest on: a seed fixes the training subset, ``split_seed`` the test set."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tlbench.config.schema import DataConfig, DatasetName
from tlbench.data import load_splits
from tlbench.report.paired import compare_strategies, comparison_table, with_comparisons
from tlbench.report.stats import BINOMIAL, PER_IMAGE
from tlbench.tracking.study_reader import RunPredictions
from tlbench.training import prepare

# --- paired comparisons -------------------------------------------------------------------------------------

Trials = Callable[..., pd.DataFrame]
LABELS = (0, 1, 0, 1)


def _run(strategy: str, seed: int, correct: list[int], **kw: Any) -> dict[str, Any]:
    return {"strategy": strategy, "seed": seed, "test_acc": float(np.mean(correct)), "n_test": len(correct),
            "hours": 0.001, "split_seed": 0, "data_fingerprint": f"10-{seed}", **kw}  # fmt: skip


def _predictions(table: pd.DataFrame, correct: list[list[int]]) -> dict[str, RunPredictions]:
    """Predicted = label where correct, the other class where not."""
    out = {}
    for run_id, row in zip(table["run_id"], correct, strict=True):
        predicted = tuple(y if c else 1 - y for y, c in zip(LABELS, row, strict=True))
        out[str(run_id)] = RunPredictions(LABELS, predicted)
    return out


# A: seed 1 right on images 0, 3; seed 2 on 0, 1, 3. B: always wrong.
# The contrast B - A is minus test_paired_stats.HAND.
A1, A2, WRONG = [1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0]


def test_known_answer_per_image(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    (c,) = compare_strategies(table, _predictions(table, [A1, A2, WRONG, WRONG]))
    assert (c.best, c.basis, c.seeds, c.images) == ("linear_probe", PER_IMAGE, (1, 2), 4)
    scratch = c.get("scratch")
    assert scratch is not None
    # worked by hand (test_paired_stats): mean -.625, variance 1/24 + 1/64, 3 degrees of freedom
    half = stats.t.ppf(0.975, 3) * np.sqrt(1 / 24 + 1 / 64)
    assert scratch.diff == pytest.approx(-0.625)
    assert (scratch.low, scratch.high) == pytest.approx((-0.625 - half, -0.625 + half))
    assert c.get("linear_probe").p_best > 0.9  # type: ignore[union-attr]


def test_pairs_only_on_shared_seeds_and_leaves_single_seeds_out(trials: Trials) -> None:
    rows = [_run("linear_probe", s, [1, 1, 0, 1]) for s in (1, 2, 3)]
    rows += [_run("full_finetune", s, [1, 1, 1, 1]) for s in (1, 2)]  # seed 3 failed
    rows += [_run("scratch", 1, [0, 1, 0, 0])]
    (c,) = compare_strategies(trials(*rows), {})
    # seed 3 of the probe has no partner: the comparison is on seeds 1 and 2; scratch has one seed
    assert c.seeds == (1, 2) and [s.strategy for s in c.strategies] == ["linear_probe", "full_finetune"]
    assert c.left_out == ("scratch (1 seed)",)


def test_mismatched_training_subsets_are_reported(trials: Trials) -> None:
    rows = [_run("linear_probe", s, A2) for s in (1, 2)]
    rows += [_run("scratch", 1, A1, data_fingerprint="other"), _run("scratch", 2, A1)]
    (c,) = compare_strategies(trials(*rows), {})
    # seed 1's runs did not see the same training images: said, not hidden
    assert any("seed 1" in n and "training subsets differ" in n for n in c.notes)


def test_falls_back_to_binomial_without_predictions(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    predictions = _predictions(table, [A1, A2, WRONG, WRONG])
    del predictions[str(table["run_id"].iloc[0])]
    (c,) = compare_strategies(table, predictions)
    assert c.basis == BINOMIAL and any("1 of 4 final runs lack" in n for n in c.notes)


def test_predictions_that_disagree_with_test_acc_are_not_used(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG))  # fmt: skip
    # the probe's seed-1 predictions say 75% while test/acc says 50%: the artifact is not trusted
    (c,) = compare_strategies(table, _predictions(table, [A2, A2, WRONG, WRONG]))
    assert c.basis == BINOMIAL and any("predictions give 0.7500" in n for n in c.notes)


def test_tables_carry_the_comparison(trials: Trials) -> None:
    table = trials(_run("linear_probe", 1, A1), _run("linear_probe", 2, A2),
                   _run("scratch", 1, WRONG), _run("scratch", 2, WRONG),
                   {"role": "tune", "strategy": "scratch", "seed": 0, "test_acc": 0.5})  # fmt: skip
    comparisons = compare_strategies(table, {})
    rows = comparison_table(comparisons)
    assert list(rows["strategy"]) == ["linear_probe", "scratch"]
    annotated = with_comparisons(table, comparisons, finals_only=True)
    # the final runs carry their size's difference; the tuning trial carries nothing
    assert annotated["paired_diff"].iloc[2] == pytest.approx(-0.625)
    assert pd.isna(annotated["paired_diff"].iloc[4]) and len(annotated) == len(table)


def test_racing_keeps_the_survivors_seeds_and_pairs_a_retired_arm_alone(trials: Trials) -> None:
    # the race: scratch retired after seeds 1-2, the probe and full fine-tuning ran to seed 5
    rows = [_run("linear_probe", s, [1, 1, 0, s % 2]) for s in range(1, 6)]
    rows += [_run("full_finetune", s, [1, 1, 1, s % 2]) for s in range(1, 6)]
    rows += [_run("scratch", s, [0, 1, 0, 0]) for s in (1, 2)]
    (c,) = compare_strategies(trials(*rows), {})
    # the joint comparison is on all five seeds of the two survivors, not cut to the retired arm's two
    assert c.seeds == (1, 2, 3, 4, 5) and c.best == "full_finetune"
    probe, scratch = c.get("linear_probe"), c.get("scratch")
    assert probe is not None and scratch is not None and probe.p_best is not None
    # the retired arm: paired with the best on the seeds both have (1, 2), no P(best)
    assert scratch.seeds == (1, 2) and scratch.p_best is None and c.seeds_of(scratch) == (1, 2)
    # full_finetune on seeds 1, 2: (1 + 1 + 1 + 1/0) / 4 -> 0.875; scratch 0.25 on both
    assert scratch.diff == pytest.approx(0.25 - 0.875) and scratch.mean == pytest.approx(0.25)
    table = comparison_table([c]).set_index("strategy")
    assert table.loc["scratch", "paired_seeds"] == "1 2" and math.isnan(table.loc["scratch", "p_best"])


def test_a_missing_seed_no_longer_costs_every_arm_that_seed(trials: Trials) -> None:
    rows = [_run(s, seed, A2) for s in ("linear_probe", "full_finetune") for seed in (1, 2, 3)]
    rows += [_run("partial", seed, A1) for seed in (1, 2)]  # its seed 3 failed
    (c,) = compare_strategies(trials(*rows), {})
    # the probe and full fine-tuning are compared on three seeds; partial on its two, with the best
    assert c.seeds == (1, 2, 3) and c.get("partial").seeds == (1, 2)  # type: ignore[union-attr]


def test_a_leader_with_fewer_seeds_is_still_the_best(trials: Trials) -> None:
    # the default study at n=5: the race gave the probe and partial 8 seeds (undecided between them)
    # and stopped lp_ft at 3 (its pairs decided); lp_ft leads by far on its seeds: it is the best
    rows = [_run("linear_probe", s, [1, 0, 0, s % 2]) for s in range(1, 9)]
    rows += [_run("partial", s, [1, 0, 0, (s + 1) % 2]) for s in range(1, 9)]
    rows += [_run("lp_ft", s, [1, 1, 1, s % 2]) for s in (1, 2, 3)]
    (c,) = compare_strategies(trials(*rows), {})
    assert c.best == "lp_ft" and c.seeds == (1, 2, 3)  # jointly on the seeds every arm has
    assert all(s.diff <= 0 for s in c.strategies)  # nobody ahead of the best
    assert all(s.p_best is not None for s in c.strategies)


# --- the claim paired comparisons rest on: a seed fixes the training subset, split_seed the test set ---


def _cfg(**overrides: object) -> DataConfig:
    values: dict = {"name": DatasetName.synthetic, "resolution": 8, "num_classes": 3, "samples_per_class": 40}
    return DataConfig(**{**values, "n_per_class": 5, **overrides})


def test_the_subset_is_a_function_of_data_config_and_seed() -> None:
    # nothing but the data config and the seed reaches the subset: no strategy, model or optimiser
    assert list(inspect.signature(load_splits).parameters) == ["cfg", "seed"]
    # and the trial passes the run's own seed (the final seed) to it
    assert "load_splits(cfg.data, seed=cfg.seed)" in inspect.getsource(prepare)


def test_same_seed_same_subset_and_every_seed_the_same_test_set() -> None:
    one, again, other = load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=1), load_splits(_cfg(), seed=2)
    # same seed: the same training images (the fingerprint hashes their indices) ...
    assert one.fingerprint == again.fingerprint and torch.equal(one.train.images, again.train.images)
    # ... another seed: other training images, the very same test images in the same order
    assert one.fingerprint != other.fingerprint
    assert torch.equal(one.test.images, other.test.images) and torch.equal(one.test.labels, other.test.labels)
