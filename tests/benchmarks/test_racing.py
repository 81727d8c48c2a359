"""benchmarks.racing: a fixed budget of k seeds is the study with its later final seeds dropped."""

from __future__ import annotations

import pandas as pd

from benchmarks.racing import first_seeds


def test_first_seeds_keeps_tuning_and_the_first_k_final_seeds() -> None:
    trials = pd.DataFrame(
        {
            "role": ["tune", "tune", "budget_check", "final", "final", "final", "final"],
            "seed": ["0", "0", "0", "1", "2", "3", "4"],
            "run_id": list("abcdefg"),
        }
    )
    kept = first_seeds(trials, 2)
    assert list(kept["run_id"]) == ["a", "b", "c", "d", "e"]  # tuning untouched; seeds 3 and 4 dropped
    assert list(first_seeds(trials, 4)["run_id"]) == list("abcdefg")
