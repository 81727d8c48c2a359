from __future__ import annotations

from tlbench.config import load_config
from tlbench.training.costing import flop_profile, forget_flop_profiles
from tlbench.training.inputs import image_inputs
from tlbench.training.prepare import prepare

TINY = [
    "data=synthetic",
    "data.samples_per_class=4",
    "backbone.name=test_efficientnet",
    "backbone.weights=none",
    "strategy=scratch",
    "tracking=disabled",
    "trainer.feature_cache_dir=null",
]


def test_profiles_are_measured_once_per_process_until_forgotten() -> None:
    prepared = prepare(load_config(TINY))
    inputs = image_inputs(prepared, "test")
    first = flop_profile(prepared, inputs)
    # a second trial of the same shape reuses the measurement (the very same object)
    assert flop_profile(prepared, inputs) is first
    forget_flop_profiles()
    # forgotten: measured again, to the same counts (what a fresh process would do)
    again = flop_profile(prepared, inputs)
    assert again is not first and again == first
