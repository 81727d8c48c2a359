"""Step 5 of a trial: its cost, from measured FLOPs (checked against an independent analytic count) and time.

Per-sample counts depend only on the architecture, input shape and freeze state, so they are
measured once per process for each such combination (a sweep's trials reuse them) and each
measurement is compared with :func:`tlbench.cost.flops_analytic.analytic_train_step_flops`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from tlbench.cost.accounting import PhaseWork, TrialCost, trial_cost
from tlbench.cost.flops import measure_forward_flops, measure_train_step_flops
from tlbench.cost.flops_analytic import analytic_train_step_flops
from tlbench.models.freeze import keep_frozen_in_eval, set_frozen
from tlbench.training.fit import FitOutcome
from tlbench.training.inputs import TrialInputs, forget_prefix_flops
from tlbench.training.prepare import PreparedTrial

log = logging.getLogger(__name__)

_PROBE = 2  # samples per probe batch: BatchNorm in train mode needs more than one value per channel


@dataclass(frozen=True)
class FlopProfile:
    step_per_sample: tuple[float, ...]  # training forward+backward per sample, per phase
    forward_per_sample: float  # evaluation forward per sample on the trial's inputs
    check: str  # outcome of the analytic cross-check


_MEMO: dict[tuple[object, ...], FlopProfile] = {}


def forget_flop_profiles() -> None:
    """Forget every FLOP profile measured in this process, the frozen prefixes' included.

    The next trial measures its own again, as the first trial of a fresh process (a sweep worker)
    does: what the benchmark needs to time a cold trial.
    """
    _MEMO.clear()
    forget_prefix_flops()


def _probe(inputs: TrialInputs) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = inputs.data["train"]
    n = min(_PROBE, int(y.shape[0]))
    batch = x[:n]
    return (inputs.eval_transform(batch) if inputs.eval_transform else batch), y[:n]


def _key(prepared: PreparedTrial, inputs: TrialInputs, x: torch.Tensor) -> tuple[object, ...]:
    cfg = prepared.cfg
    return (
        cfg.backbone.name,
        cfg.strategy.name.value,  # bitfit and lora freeze by parameter kind: not visible in the phases
        repr(cfg.strategy.lora),
        sum(p.numel() for p in inputs.network.parameters()),
        repr(cfg.strategy.head),
        prepared.splits.num_classes,
        tuple((p.freeze_depth, p.solver) for p in prepared.model.phases),
        type(inputs.network).__name__,
        tuple(x.shape[1:]),
        prepared.cache_reason,
    )


def _check(measured: int, network: nn.Module, shape: tuple[int, ...]) -> str:
    try:
        analytic = analytic_train_step_flops(network, shape).total
    except Exception as exc:  # the analytic validator knows conv/linear/attention layers only
        return f"not checked: {type(exc).__name__}"
    if analytic == measured:
        return "analytic match"
    log.warning("FLOP count %d differs from the analytic count %d", measured, analytic)
    return f"analytic mismatch: measured {measured}, analytic {analytic}"


def flop_profile(prepared: PreparedTrial, inputs: TrialInputs) -> FlopProfile:
    """Per-sample FLOPs of each phase's training step and of evaluation, frozen layers honoured.

    Measured on a copy of the network in exactly the freeze state and train/eval modes it trains
    in; the network itself is left as it was.
    """
    x, y = _probe(inputs)
    key = _key(prepared, inputs, x)
    if key in _MEMO:
        return _MEMO[key]
    model, network = prepared.model, inputs.network
    backbone = model.network.backbone
    frozen_state = {n: p.requires_grad for n, p in backbone.named_parameters()}
    steps: list[float] = []
    checks: list[str] = []
    was_training = network.training
    for phase in model.phases:
        if not phase.in_loop:  # the probe: one objective evaluation = the head's step on features
            head = model.network.head
            width = next(m.in_features for m in head.modules() if isinstance(m, nn.Linear))
            features = torch.zeros(x.shape[0], width, device=y.device)
            measured = measure_train_step_flops(head, features, y)
            steps.append(measured.total / x.shape[0])
            checks.append(_check(measured.total, head, tuple(features.shape)))
            continue
        set_frozen(backbone, model.groups, phase.freeze_depth)
        network.train()
        keep_frozen_in_eval(network)
        measured = measure_train_step_flops(network, x, y)
        steps.append(measured.total / x.shape[0])
        checks.append(_check(measured.total, network, tuple(x.shape)))
    for name, param in backbone.named_parameters():
        param.requires_grad_(frozen_state[name])
    network.train(was_training)
    forward = measure_forward_flops(network, x) / x.shape[0]
    check = next((c for c in checks if c != "analytic match"), "analytic match" if checks else "no training")
    profile = FlopProfile(step_per_sample=tuple(steps), forward_per_sample=forward, check=check)
    _MEMO[key] = profile
    return profile


def trial_cost_of(
    prepared: PreparedTrial, outcome: FitOutcome, *, eval_images: int
) -> tuple[TrialCost, str | None]:
    """The trial's cost (``cost/*``) and the FLOP count's analytic check (None: FLOPs not counted).

    ``eval_images``: images through evaluation forward passes (``evaluate_trial`` counts them).
    """
    inputs = outcome.inputs
    count = prepared.cfg.trainer.count_flops
    profile = flop_profile(prepared, inputs) if count and inputs is not None else None
    cache = inputs.cache if inputs is not None else None
    steps = list(profile.step_per_sample) if profile else [0.0 for _ in prepared.model.phases]
    if outcome.probe is not None:  # each L-BFGS objective evaluation is a full pass over the features
        steps[0] *= outcome.probe.evaluations
    computed = cache.computed_flops if cache else {}
    reused = cache.reused_flops if cache else {}
    phases = [
        PhaseWork(name=phase.name, samples=n, flops_per_sample=f)
        for phase, n, f in zip(prepared.model.phases, outcome.progress.phase_samples, steps, strict=True)
    ]
    cost = trial_cost(
        fit_seconds=outcome.seconds,
        fit_cpu_seconds=outcome.cpu_seconds,
        threads=outcome.threads,
        phases=phases,
        extraction_flops=computed.get("train", 0.0),
        eval_flops=(profile.forward_per_sample * eval_images if profile else 0.0)
        + computed.get("val", 0.0)
        + computed.get("test", 0.0),
        reused_extraction_flops=reused.get("train", 0.0),
        reused_extraction_seconds=cache.reused_seconds if cache else 0.0,
        flops_counted=profile is not None,
        peak_memory_mb=outcome.peak_mb,
        memory_kind=outcome.memory_kind,
        device=prepared.device,
    )
    return cost, profile.check if profile is not None else None
