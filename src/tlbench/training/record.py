"""Steps 4 to 6 of a trial: what it scored (val, test, the collapse check), what it cost, what it logs."""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

import tlbench
from tlbench.config.schema import RunConfig, as_plain_dict
from tlbench.data import DataSplits
from tlbench.strategies import PROBE_PHASE
from tlbench.tracking import MetricBuffer, MlflowRun
from tlbench.tracking import names as N
from tlbench.tracking.runs import redact_password
from tlbench.training.device import (
    DeviceInfo,
    FitOutcome,
    autocast_context,
    device_hours_rule,
    trial_cost,
)
from tlbench.training.fit import BestWeights, CompileDecision, FitProgress, ProbeFit
from tlbench.training.flops import (
    analytic_train_step_flops,
    forget_forward_flops,
    measure_forward_flops,
    measure_train_step_flops,
)
from tlbench.training.inputs import CacheUse, TrialInputs
from tlbench.training.network import BuiltModel, count_parameters, keep_frozen_in_eval, set_frozen
from tlbench.training.threads import ThreadPlan

log = logging.getLogger(__name__)


# -- step 4, evaluation: accuracy and loss on validation and test ------------------------------------


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    predicted: list[int]  # argmax class per sample, in the batches' order


def evaluate(
    network: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device_type: str,
    precision: str,
) -> EvalResult:
    # Counted by hand, not with torchmetrics: the per-image predictions are needed anyway (paired
    # comparisons), and the accuracy stays the exact ratio correct / seen that they reproduce.
    was_training = network.training
    network.eval()
    correct = 0
    loss_sum = 0.0
    seen = 0
    predicted: list[torch.Tensor] = []
    with torch.inference_mode(), autocast_context(device_type, precision):
        for x, y in batches:
            logits = network(x).float()
            predicted.append(logits.argmax(dim=1))
            correct += int((predicted[-1] == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += int(y.shape[0])
    network.train(was_training)
    if seen == 0:
        raise ValueError("evaluate() got an empty split")
    labels = [int(v) for v in torch.cat(predicted).tolist()]
    return EvalResult(accuracy=correct / seen, loss=loss_sum / seen, predicted=labels)


@dataclass(frozen=True)
class TrialEvaluation:
    metrics: dict[str, float]  # val/acc, val/loss, test/acc, test/loss: those measured
    predictions: list[int]  # per test image, in the split's order (completed trials)
    eval_images: int  # images through evaluation forward passes: per-epoch val, a final val, test
    best_step: int | None = None  # early stopping: the optimizer step whose weights were evaluated
    collapse: str | None = None  # why the result is degenerate (see collapse_reason); None: healthy


def evaluate_trial(
    inputs: TrialInputs | None,
    splits: DataSplits,
    *,
    status: str,
    progress: FitProgress,
    best: BestWeights | None,
    batch_size: int,
    seed: int,
    device_type: str,
    precision: str,
) -> TrialEvaluation:
    """A completed trial: val (of the weights early stopping chose, ``best``, restored first), then test,
    and the collapse check; a pruned or failed one keeps its last val/acc, untested. ``inputs``: what
    the fit trained on (None: it failed first). ``data.train_on_val``: nothing is validated."""
    history = progress.history
    if inputs is None:  # failed before any input existed
        return TrialEvaluation({}, [], eval_images=0)
    # The probe's validation (epoch 0) ran on extracted features, already counted as extraction.
    val_passes = sum(1 for r in history if r.epoch > 0 and r.val_acc is not None)
    validated = [r.val_acc for r in history if r.val_acc is not None]
    if status != N.COMPLETED:
        last_val = {N.VAL_ACC: validated[-1]} if validated and not splits.val_in_train else {}
        return TrialEvaluation(last_val, [], eval_images=val_passes * len(splits.val))

    def run(split: str) -> EvalResult:
        loader = inputs.loader(split, batch_size=batch_size, seed=seed)
        return evaluate(inputs.network, loader, device_type=device_type, precision=precision)

    metrics: dict[str, float] = {}
    best_step: int | None = None
    if not splits.val_in_train:
        (metrics[N.VAL_ACC], metrics[N.VAL_LOSS]), extra, best_step = _chosen_weights(
            inputs.network, progress, best, run
        )
        val_passes += extra
    test = run("test")
    metrics[N.TEST_ACC], metrics[N.TEST_LOSS] = test.accuracy, test.loss
    chance = float(splits.val.labels.bincount().max()) / max(1, len(splits.val))
    loop = [r for r in history if r.epoch > 0]  # the last loop phase's losses (a probe's fit is one point)
    collapse = collapse_reason(
        val_acc=metrics.get(N.VAL_ACC),
        n_val=len(splits.val),
        chance=chance,
        losses=[r.train_loss for r in loop if r.phase == loop[-1].phase] if loop else [],
    )
    return TrialEvaluation(
        metrics,
        test.predicted,
        eval_images=val_passes * len(splits.val) + len(splits.test),
        best_step=best_step,
        collapse=collapse,
    )


def _chosen_weights(
    network: nn.Module, progress: FitProgress, best: BestWeights | None, run: Callable[[str], EvalResult]
) -> tuple[tuple[float, float], int, int | None]:
    """((val/acc, val/loss) of the weights evaluated, extra validation passes, their step or None): the
    final weights (validated again if the last epoch was not), or with early stopping the best validated
    ones, restored into ``network``, unless the final ones turn out strictly better."""
    last = progress.history[-1] if progress.history else None
    extra = 0
    if last is not None and last.val_acc is not None and last.val_loss is not None:
        final = (last.val_acc, last.val_loss)
    else:
        result = run("val")
        final, extra = (result.accuracy, result.loss), 1
    if best is None:
        return final, extra, None
    if final[0] > best.val_acc:
        return final, extra, progress.steps
    network.load_state_dict(best.state)
    return (best.val_acc, best.val_loss), extra, best.step


# One-sided level of the "better than chance" test: a validation accuracy whose p-value is above it
# is within noise of chance.
COLLAPSE_ALPHA = 0.05


def collapse_reason(
    *,
    val_acc: float | None,
    n_val: int,
    chance: float,
    losses: Sequence[float],
    alpha: float = COLLAPSE_ALPHA,
) -> str | None:
    """Why a completed trial's result is degenerate, or None when it is not:

    - **val/acc within noise of chance**: an exact one-sided binomial test of the correct answers
      against ``chance`` (always answering the largest class) cannot reject "no better" at ``alpha``;
      a set too small for even a perfect score to be significant (4 images, 2 classes: p = 0.0625) is
      never flagged.
    - **the last phase's training loss ends above its first epoch's and above a guess's**
      (``-ln(chance)``): the second condition spares a fit that starts from a converged probe (lp_ft's
      fine-tune starts near 0.5) and drifts up a little while still classifying.
    """
    from scipy.stats import binomtest

    reasons = []
    if val_acc is not None and n_val > 0 and 0.0 < chance < 1.0:
        correct = round(val_acc * n_val)
        if binomtest(n_val, n_val, chance, alternative="greater").pvalue <= alpha:  # the test can tell
            p_value = binomtest(correct, n_val, chance, alternative="greater").pvalue
            if p_value > alpha:
                reasons.append(
                    f"val/acc {val_acc:.3f} is within noise of chance {chance:.3f} "
                    f"({correct}/{n_val} correct, one-sided binomial p={p_value:.2g} > {alpha:g})"
                )
    guess = -math.log(chance) if 0.0 < chance < 1.0 else 0.0
    if len(losses) >= 2 and losses[-1] > max(losses[0], guess):
        reasons.append(
            f"training loss ended at {losses[-1]:.4g}, above its first epoch's {losses[0]:.4g} and a "
            f"chance guess's {guess:.3g}"
        )
    return "; ".join(reasons) or None


# -- step 5, cost: measured FLOPs (checked against the analytic count) and time ---------------------
# Per-sample counts depend only on the architecture, input shape and freeze state: measured once per
# process for each such combination (a sweep's trials reuse them).

_PROBE = 2  # samples per probe batch: BatchNorm in train mode needs more than one value per channel


@dataclass(frozen=True)
class FlopProfile:
    step_per_sample: tuple[float, ...]  # training forward+backward per sample, per phase
    forward_per_sample: float  # evaluation forward per sample on the trial's inputs
    check: str  # outcome of the analytic cross-check


_MEMO: dict[tuple[object, ...], FlopProfile] = {}


def forget_flop_profiles() -> None:
    """Forget every FLOP profile measured in this process (the benchmark's cold trial measures its own)."""
    _MEMO.clear()
    forget_forward_flops()


def _check(measured: int, network: nn.Module, shape: tuple[int, ...]) -> str:
    try:
        analytic = analytic_train_step_flops(network, shape).total
    except Exception as exc:  # the analytic validator knows conv/linear/attention layers only
        return f"not checked: {type(exc).__name__}"
    if analytic == measured:
        return "analytic match"
    log.warning("FLOP count %d differs from the analytic count %d", measured, analytic)
    return f"analytic mismatch: measured {measured}, analytic {analytic}"


def flop_profile(model: BuiltModel, inputs: TrialInputs, *, identity: tuple[object, ...]) -> FlopProfile:
    """Per-sample FLOPs of each phase's training step and of evaluation, measured in the freeze state
    and train/eval modes each phase trains in (the network is left as it was). ``identity``: the
    memo's key beyond the network's shape and phases (:func:`flop_identity`)."""
    x, y = inputs.data["train"]
    n = min(_PROBE, int(y.shape[0]))
    x, y = (inputs.eval_transform(x[:n]) if inputs.eval_transform else x[:n]), y[:n]
    network = inputs.network
    shape = sum(p.numel() for p in network.parameters()), type(network).__name__, tuple(x.shape[1:])
    key = (*identity, tuple((p.freeze_depth, p.solver) for p in model.phases), *shape)
    if key in _MEMO:
        return _MEMO[key]
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


def flop_identity(cfg: RunConfig, *, num_classes: int, cache_reason: str) -> tuple[object, ...]:
    """What makes two trials' FLOP profiles differ beyond the network's shape and phases."""
    return (
        cfg.backbone.name,
        cfg.strategy.name.value,  # bitfit and lora freeze by parameter kind: not visible in the phases
        repr(cfg.strategy.lora),
        repr(cfg.strategy.head),
        num_classes,
        cache_reason,
    )


def trial_cost_of(
    model: BuiltModel,
    inputs: TrialInputs | None,
    outcome: FitOutcome,
    *,
    samples: list[int],
    probe: ProbeFit | None,
    eval_images: int,
    identity: tuple[object, ...] | None,
) -> tuple[dict[str, float], str | None]:
    """The trial's ``cost/*`` metrics and the FLOP count's analytic check (None: FLOPs not counted).

    ``samples``: training samples per phase; ``eval_images``: images through evaluation forward passes;
    ``identity``: the FLOP profile's (:func:`flop_identity`), None when FLOPs are not counted.
    """
    profile = flop_profile(model, inputs, identity=identity) if identity is not None and inputs else None
    cache = inputs.cache if inputs is not None else CacheUse(status="off")
    steps = list(profile.step_per_sample) if profile else [0.0 for _ in model.phases]
    if probe is not None:  # each L-BFGS objective evaluation is a full pass over the features
        steps[0] *= probe.evaluations
    computed, reused = cache.computed_flops, cache.reused_flops
    train_flops = computed.get("train", 0.0) + sum(n * f for n, f in zip(samples, steps, strict=True))
    eval_flops = (profile.forward_per_sample * eval_images if profile else 0.0) + computed.get("val", 0.0)
    cost = trial_cost(
        outcome,
        train_samples=sum(samples),
        train_flops=train_flops if profile is not None else None,
        eval_flops=eval_flops + computed.get("test", 0.0) if profile is not None else None,
        reused_flops=reused.get("train", 0.0),
        reused_seconds=cache.reused_seconds,
    )
    return cost, profile.check if profile is not None else None


# -- step 6, the record: the tracking contract's params, tags and metrics -----------------------------

# A pruned trial did what the protocol asked (tag status=pruned tells it apart); KILLED means only
# "interrupted"; anything else ("failed: …", "failed: collapsed: …") is FAILED.
MLFLOW_STATUS = {N.COMPLETED: "FINISHED", N.PRUNED: "FINISHED"}


def mlflow_status(status: str, *, interrupted: bool = False) -> str:
    """The MLflow run status of a trial status (``interrupted``: Ctrl-C, whatever the status says)."""
    return "KILLED" if interrupted else MLFLOW_STATUS.get(status, "FAILED")


def run_name(cfg: RunConfig) -> str:
    """``tracking.run_name``, else ``"<strategy> n=<n|all> seed=<seed>"``: never MLflow's random name,
    which comes from an RNG the trial has seeded (every single trial was once ``overjoyed-slug-911``)."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    n = cfg.data.n_per_class if cfg.data.n_per_class is not None else "all"
    return f"{cfg.strategy.name.value} n={n} seed={cfg.seed}"


def start_run(
    cfg: RunConfig, params: dict[str, Any], tags: dict[str, str]
) -> tuple[MlflowRun | None, MetricBuffer | None]:
    """The trial's MLflow run (None: tracking disabled), with its params, the tags known before the fit
    and its config (status ``running`` until the trial ends), and its learning curve's buffer (None:
    ``tracking.log_epoch_metrics`` off)."""
    if not cfg.tracking.enabled:
        return None, None
    name = run_name(cfg)  # everything computed here first; the calls into tracking come last
    config = yaml.safe_dump(as_plain_dict(cfg), sort_keys=False)
    tracking = cfg.tracking
    run = MlflowRun.start(
        experiment=tracking.experiment,
        run_name=name,
        tracking_uri=tracking.tracking_uri,
        parent_run_id=tracking.parent_run_id,
        tags={**tags, N.STATUS: "running"},
        unique=tracking.parent_run_id is None,  # a sweep's run names are unique by construction
    )
    run.log_params(params)
    run.log_text(redact_password(config), N.CONFIG_ARTIFACT)  # a tracking URI's password stays out of it
    return run, MetricBuffer(run) if tracking.log_epoch_metrics else None  # a write per 15 s, not per epoch


def trial_params(cfg: RunConfig, model: BuiltModel, splits: DataSplits, *, precision: str) -> dict[str, Any]:
    """The tracking contract's params, and the rest of what makes the result reproducible."""
    probe = next((p for p in model.phases if p.name == PROBE_PHASE), None)
    return {
        # the tracking contract
        "strategy": cfg.strategy.name.value,
        "backbone": cfg.backbone.name,
        "weights": model.weights.value,
        "freeze_depth": model.freeze_depth,
        "n_per_class": cfg.data.n_per_class if cfg.data.n_per_class is not None else "all",
        "lr": cfg.optimizer.lr,
        "schedule": cfg.schedule.name.value,
        "seed": cfg.seed,
        "dataset": cfg.data.name.value,
        "resolution": cfg.data.resolution,
        "epochs": 0 if not model.phases else sum(p.epochs for p in model.phases),
        # the rest of what makes the result reproducible
        "freeze_groups": model.groups.depth,
        "probe_solver": (probe.solver if probe is not None else ""),
        "min_steps": cfg.trainer.min_steps or "",
        "val_every_n_epochs": cfg.trainer.val_every_n_epochs,
        "head": cfg.strategy.head.type.value,
        "optimizer": cfg.optimizer.name.value,
        "weight_decay": cfg.optimizer.weight_decay,
        "backbone_lr_mult": cfg.optimizer.backbone_lr_mult,
        "layer_decay": cfg.optimizer.layer_decay,
        "batch_size": cfg.trainer.batch_size,
        "precision": precision,
        "augment": cfg.data.augment,
        "split_seed": cfg.data.split_seed,
        "data_root": cfg.data.root or "",
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "n_classes": splits.num_classes,
        "data_fingerprint": splits.fingerprint,
    }


def trial_tags(
    cfg: RunConfig, device: DeviceInfo, threads: ThreadPlan, *, channels_last: bool
) -> dict[str, str]:
    """The tags known before the fit: where and how the trial runs, and the config's own tags."""
    return {
        "threads": str(threads.threads),  # torch intra-op threads (cost/device_hours divides by them)
        "threads_reason": threads.reason,
        N.DEVICE: device.name,
        N.DEVICE_COUNT: str(device.count),
        "device_model": device.model,
        N.STRATEGY_TAG: cfg.strategy.name.value,
        N.N_PER_CLASS_TAG: str(cfg.data.n_per_class if cfg.data.n_per_class is not None else "all"),
        "channels_last": str(channels_last).lower(),
        "tlbench_version": tlbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **cfg.tags,
    }


def trial_metrics(
    model: BuiltModel,
    progress: FitProgress,
    evaluation: TrialEvaluation,
    *,
    probe: ProbeFit | None,
    compiled: CompileDecision | None,
) -> dict[str, float]:
    """The final metrics but cost's: parameters, the probe's fit, the last training loss, val/test."""
    trainable, total = count_parameters(model.network)
    metrics: dict[str, float] = {N.PARAMS_TRAINABLE: float(trainable), N.PARAMS_TOTAL: float(total)}
    if probe is not None:
        metrics.update(
            {
                N.PROBE_L2: probe.l2,
                "probe/val_acc": probe.val_acc,
                "probe/iterations": float(probe.iterations),
                "probe/evaluations": float(probe.evaluations),
                "probe/converged": float(probe.converged),
            }
        )
    history = progress.history
    if history:
        metrics[N.TRAIN_LOSS] = history[-1].train_loss
    if model.loop_phases:  # the loop's optimizer steps (an L-BFGS probe has none to count)
        metrics[N.TRAIN_STEPS] = float(progress.steps)
    if evaluation.best_step is not None:  # early stopping: the step whose weights were evaluated
        metrics[N.BEST_STEP] = float(evaluation.best_step)
    if compiled is not None:  # inside cost/fit_seconds (the fit's timer), shown apart
        metrics[N.COMPILE_SECONDS] = compiled.compile_seconds
    metrics.update(evaluation.metrics)
    return metrics


def outcome_tags(
    outcome: FitOutcome,
    cache: CacheUse | None,
    device: DeviceInfo,
    *,
    status: str,
    collapse: str | None,
    cache_reason: str,
    compiled: CompileDecision | None,
    eager_reason: str | None,
    flops_check: str | None,
) -> dict[str, str]:
    """The tags that explain the metrics (status, memory kind, feature cache, compile, the device-hours
    rule, the FLOP count's check, the collapse). ``cache``: None when the fit failed before its inputs
    existed; ``compiled``: None when off or nothing trained in the loop; ``eager_reason``: why the loop
    trained eagerly whatever it measured (None: it may compile); ``flops_check``: None when FLOPs are
    not counted."""
    tags = {N.STATUS: status, "memory_kind": outcome.memory_kind}
    if cache is not None:
        tags[N.FEATURE_CACHE] = cache.status
        tags["feature_cache_reason"] = cache_reason
    if compiled is not None:
        tags["compile"] = "on" if compiled.compiled else "off"
        tags["compile_reason"] = compiled.reason
    elif eager_reason is not None:
        tags["compile"], tags["compile_reason"] = "off", eager_reason
    tags[N.DEVICE_HOURS_RULE] = device_hours_rule(device.kind, threads=outcome.threads, devices=device.count)
    if flops_check is not None:
        tags["flops_check"] = flops_check
    if collapse:
        tags.update({N.COLLAPSED: "true", N.COLLAPSE_REASON: collapse})
    return tags
