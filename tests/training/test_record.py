from __future__ import annotations

from tlbench.config import load_config
from tlbench.training.inputs import plan_inputs, trial_inputs
from tlbench.training.network import prepare
from tlbench.training.record import flop_identity, flop_profile, forget_flop_profiles

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
    trial = prepare(load_config(TINY))
    cfg, splits, model, channels_last = trial.cfg, trial.splits, trial.model, trial.channels_last
    plan = plan_inputs(
        cfg, model, splits, device=trial.device, precision=trial.precision, channels_last=channels_last
    )
    inputs = trial_inputs(model, splits, plan, cache=None)  # scratch: the images themselves
    identity = flop_identity(cfg, num_classes=splits.num_classes, cache_reason="test")
    first = flop_profile(model, inputs, identity=identity)
    # a second trial of the same shape reuses the measurement (the very same object)
    assert flop_profile(model, inputs, identity=identity) is first
    forget_flop_profiles()
    # forgotten: measured again, to the same counts (what a fresh process would do)
    again = flop_profile(model, inputs, identity=identity)
    assert again is not first and again == first


def test_strategies_that_freeze_by_parameter_kind_get_their_own_flop_profile() -> None:
    # bitfit's phases look like full_finetune's (freeze depth 0): a profile memoised on the phases gave
    # bitfit (and lora) full fine-tuning's FLOPs when they ran after it in one process (a sweep worker)
    from tlbench.run import train as run_train

    base = ["data=digits", "data.n_per_class=2", "tracking=disabled", "trainer.progress_bar=false",
            "trainer.min_steps=1", "trainer.epochs=1", "trainer.val_checks=null", "data.max_val_per_class=2",
            "data.max_test_per_class=2"]  # fmt: skip
    per_sample = {}
    for name in ("full_finetune", "bitfit"):
        result = run_train(load_config([*base, f"strategy={name}"]))
        per_sample[name] = result.metrics["cost/train_flops"] / result.metrics["cost/train_samples"]
    # bitfit: no weight gradient but the head's, so about two thirds of a full fine-tune's step
    assert 0.55 < per_sample["bitfit"] / per_sample["full_finetune"] < 0.75, per_sample
