"""``run_screen``: every candidate backbone scored without training, each as one MLflow run (``role=screen``).

What a user types (a data folder, backbone names) becomes the Hydra overrides of each backbone; all
configurations are composed and validated before the first forward pass, so a misspelt backbone fails
at once. Backbones are screened one after the other and nothing is kept alive between them: the
trial pipeline's own features through the feature cache, the scores (:mod:`tlbench.screen.scores`),
``as_is`` with a class map, what the run logs, and the plain-text table the CLI prints.
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

import tlbench
from tlbench.config import load_config
from tlbench.config.compose import config_dir
from tlbench.config.schema import RunConfig, StrategyConfig, StrategyName, WeightsSource
from tlbench.data import BatchTransform, DataSplits
from tlbench.errors import ConfigError, ModelError
from tlbench.screen.scores import ScoreSettings, Timed, effective_folds, feature_scores
from tlbench.tracking import MlflowRun, check_reachable
from tlbench.tracking import names as N
from tlbench.training.device import DeviceInfo, device_hours
from tlbench.training.flops import measure_forward_flops
from tlbench.training.inputs import FeatureCache, InputPlan, cached_inputs, feature_cache, plan_inputs
from tlbench.training.network import EMBEDDED, build_model, prepare, resolve_defaults
from tlbench.training.record import evaluate

# From what a user types (a data folder, backbone names) to the Hydra overrides of each screened backbone.

DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BUILTIN_DATASETS = ("digits", "fashion_mnist", "cifar10", "synthetic")


def data_overrides(data: str | None) -> list[str]:
    """``None`` or a built-in dataset name -> ``data=<name>``; anything else is an image folder path."""
    if data is None or data in BUILTIN_DATASETS:
        return [f"data={data or 'digits'}"]
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"--data {data}: no such folder; give a folder of class sub-folders (or train/ + val/), "
            f"or one of {', '.join(BUILTIN_DATASETS)}"
        )
    return ["data=imagefolder", f"data.root={root.resolve()}"]


def backbone_overrides(item: str, *, groups: Sequence[str]) -> list[str]:
    """A config group (``efficientnet_lite1``), a timm name (hub, or embedded where shipped), or
    ``timm_name@/path/to/checkpoint`` (file weights)."""
    name, _, path = item.strip().partition("@")
    if not name:
        raise ConfigError(
            f"empty backbone in '{item}': give a config group ({', '.join(groups)}) or a timm name"
        )
    if path:
        return [f"backbone.name={name}", "backbone.weights=file", f"backbone.weights_path={path}"]
    if name in groups:
        return [f"backbone={name}"]
    weights = "embedded" if name in EMBEDDED else "hub"
    return [f"backbone.name={name}", f"backbone.weights={weights}"]


def parse_backbones(text: str | None) -> list[str]:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (default: the three embedded EfficientNet-Lites)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if len(set(items)) != len(items):
        raise ConfigError(f"--backbones lists a backbone twice: {text}")
    return items or list(DEFAULT_BACKBONES)


def parse_class_map(text: str | None) -> dict[str, list[str]]:
    """The sweep's form ``"{ants: [ant], bees: [bee, honeycomb]}"``, or the short
    ``"ants=ant,bees=bee|honeycomb"`` -> ``{"ants": ["ant"], "bees": ["bee", "honeycomb"]}``."""
    if not text:
        return {}
    if text.strip().startswith("{"):
        return _mapping_class_map(text)
    out: dict[str, list[str]] = {}
    for entry in text.split(","):
        target, sep, sources = entry.partition("=")
        names = [s.strip() for s in sources.split("|") if s.strip()]
        if not sep or not target.strip() or not names:
            raise ConfigError(
                f"--class-map entry '{entry}' is not target=source[|source...], e.g. 'ants=ant,bees=bee'"
            )
        out[target.strip()] = names
    return out


def _mapping_class_map(text: str) -> dict[str, list[str]]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"--class-map {text!r} is not a mapping like '{{ants: [ant], bees: [bee]}}'")
    out: dict[str, list[str]] = {}
    for target, sources in value.items():
        names = [str(s) for s in (sources if isinstance(sources, list) else [sources])]
        if not names:
            raise ConfigError(f"--class-map: class '{target}' maps to no source class")
        out[str(target)] = names
    return out


SCREEN_OVERRIDES = (
    "strategy=linear_probe",
    "data.augment=false",
    "trainer.cache_features=true",
    "data.max_test_per_class=1",
    "tracking=disabled",
)


@dataclass(frozen=True)
class ScreenFeatures:
    """Features (float64, on the CPU) and labels of the train pool and the validation split."""

    train: NDArray[np.float64]
    train_labels: NDArray[np.int64]
    val: NDArray[np.float64]
    val_labels: NDArray[np.int64]
    class_names: tuple[str, ...]
    resolution: int  # the side in pixels the images were fed at
    forward_flops: float  # forward FLOPs of train + val extraction (whether computed now or reused)
    extract_seconds: float  # wall time of this call's extraction (about 0 on a cache hit)
    standalone_seconds: float  # what the extraction cost when it was computed (this run or earlier)
    cache_status: str  # miss | hit | partial
    device: DeviceInfo
    fingerprint: str


def _as_numpy(tensor: torch.Tensor) -> NDArray[np.float64]:
    return np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float64)


def _labels(tensor: torch.Tensor) -> NDArray[np.int64]:
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.int64)


def extract(network: nn.Module, splits: DataSplits, plan: InputPlan, cache: FeatureCache) -> ScreenFeatures:
    """Pooled features of a linear-probe trial's ``splits`` through the feature cache (``plan``: what
    :func:`plan_inputs` planned for ``network``)."""
    split, how = plan.prefix, plan.extraction
    if split is None:  # linear_probe with caching on always splits; anything else is a bug upstream
        raise ModelError(f"the screen cannot cache features for this backbone: {plan.reason}")
    start = time.perf_counter()
    inputs = cached_inputs(network, splits, split, cache, how)
    if how.device.is_gpu:
        torch.cuda.synchronize(how.device.torch_device)
    seconds = time.perf_counter() - start
    use = inputs.cache
    flops = sum(use.computed_flops.get(s, 0.0) + use.reused_flops.get(s, 0.0) for s in ("train", "val"))
    (train, train_y), (val, val_y) = inputs.data["train"], inputs.data["val"]
    return ScreenFeatures(
        train=_as_numpy(train),
        train_labels=_labels(train_y),
        val=_as_numpy(val),
        val_labels=_labels(val_y),
        class_names=tuple(splits.class_names),
        resolution=int(splits.train.images.shape[-1]),
        forward_flops=flops,
        extract_seconds=seconds,
        standalone_seconds=seconds + use.reused_seconds,
        cache_status=use.status,
        device=how.device,
        fingerprint=str(splits.fingerprint),
    )


# --- as_is: the pretrained classifier on validation ---------------------------------------------------------

# It needs the source classifier, which the feature backbone drops, so the network is built again with
# the ``as_is`` strategy (the same weights, data and normalisation) and run once over validation.


@dataclass(frozen=True)
class AsIsScore:
    accuracy: float  # on the validation split
    seconds: float  # build + forward pass
    flops: float  # forward FLOPs over validation


def as_is_accuracy(
    cfg: RunConfig,
    splits: DataSplits,
    class_map: Mapping[str, Sequence[str]],
    *,
    device: DeviceInfo,
    precision: str,
) -> AsIsScore:
    """Validation accuracy of the backbone's own classifier with ``class_map`` (no training); ``cfg``:
    the screen's resolved trial config, ``splits`` its data on ``device``."""
    start = time.perf_counter()
    strategy = StrategyConfig(
        name=StrategyName.as_is, class_map={k: [str(v) for v in vs] for k, vs in class_map.items()}
    )
    cfg = replace(cfg, strategy=strategy)
    model = build_model(cfg, class_names=splits.class_names)
    network = model.network.to(device.torch_device).eval()
    transform = BatchTransform(mean=model.mean, std=model.std)
    val = splits.val
    batch = cfg.trainer.eval_batch_size
    batches = (
        (transform(val.images[first : first + batch]), val.labels[first : first + batch])
        for first in range(0, len(val), batch)
    )
    # the trial's own evaluation: the screen's as_is accuracy is the number an as_is trial would log
    accuracy = evaluate(network, batches, device_type=device.kind, precision=precision).accuracy
    if device.is_gpu:
        torch.cuda.synchronize(device.torch_device)
    seconds = time.perf_counter() - start
    probe = transform(val.images[:2])
    flops = measure_forward_flops(network, probe) / probe.shape[0] * len(val)
    return AsIsScore(accuracy=accuracy, seconds=seconds, flops=flops)


# --- what a screen run logs (the tracking contract for role=screen) -----------------------------------------

SCORE_NAMES = ("logme", "knn_loo_acc", "knn_acc", "probe_cv_acc")  # screen/<name>; plus as_is_acc


@dataclass(frozen=True)
class ScreenResult:
    """One backbone's screen: scores with their costs, and what identifies the data they are of."""

    backbone: str  # the timm model name (the trials' ``backbone`` param)
    weights: str
    dataset: str
    data_root: str
    n_per_class: str  # "all" for the whole train pool
    resolution: int
    seed: int
    n_train: int
    n_val: int
    n_classes: int
    num_features: int
    fingerprint: str
    device: DeviceInfo
    settings: ScoreSettings
    probe_folds: int  # the folds actually used
    scores: dict[str, Timed]
    as_is: AsIsScore | None
    forward_flops: float
    extract_seconds: float
    standalone_extract_seconds: float
    cache_status: str
    run_id: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def screen_seconds(self) -> float:
        """Wall seconds this screen spent: extraction (this run's) + every score."""
        extra = self.as_is.seconds if self.as_is else 0.0
        return self.extract_seconds + sum(t.seconds for t in self.scores.values()) + extra

    def value(self, name: str) -> float:
        if name == "as_is_acc":
            return self.as_is.accuracy if self.as_is else float("nan")
        return self.scores[name].value if name in self.scores else float("nan")


def screen_params(result: ScreenResult) -> dict[str, Any]:
    s = result.settings
    return {
        "backbone": result.backbone,
        "weights": result.weights,
        "dataset": result.dataset,
        "data_root": result.data_root,
        "n_per_class": result.n_per_class,
        "resolution": result.resolution,
        "seed": result.seed,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "n_classes": result.n_classes,
        "num_features": result.num_features,
        "data_fingerprint": result.fingerprint,
        "knn_k": s.knn_k,
        "probe_folds": result.probe_folds,
        "probe_c": s.probe_c,
        "screen_scores": ",".join([*SCORE_NAMES, *(["as_is_acc"] if result.as_is else [])]),
    }


def screen_metrics(result: ScreenResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, timed in result.scores.items():
        if math.isfinite(timed.value):
            metrics[f"screen/{name}"] = timed.value
        metrics[f"cost/{name}_seconds"] = timed.seconds
    if result.as_is is not None:
        metrics["screen/as_is_acc"] = result.as_is.accuracy
        metrics["cost/as_is_seconds"] = result.as_is.seconds
        metrics["cost/as_is_flops"] = result.as_is.flops
    seconds = result.screen_seconds
    metrics.update(
        {
            "cost/forward_flops": result.forward_flops,
            "cost/extract_seconds": result.extract_seconds,
            "cost/standalone_extract_seconds": result.standalone_extract_seconds,
            "cost/screen_seconds": seconds,
            N.DEVICE_HOURS: device_hours(seconds, result.device.count),
        }
    )
    return metrics


def screen_tags(result: ScreenResult, extra: dict[str, str]) -> dict[str, str]:
    notes = "; ".join(result.notes) or ""
    return {
        N.ROLE: N.SCREEN,
        N.STATUS: N.COMPLETED,
        N.DEVICE: result.device.name,
        N.DEVICE_COUNT: str(result.device.count),
        "device_model": result.device.model,
        "feature_cache": result.cache_status,
        "n_per_class": result.n_per_class,
        "tlbench_version": tlbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **({"screen_notes": notes} if notes else {}),
        **extra,
    }


# --- the screen as a plain-text table -----------------------------------------------------------------------

HEADER = (
    "backbone", "px", "n_train", "n_val", "LogME", "kNN LOO", "kNN val", "probe CV", "as_is",
    "fwd GFLOPs", "extract s", "scores s", "cache",
)  # fmt: skip


def _number(value: float, digits: int = 3) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def screen_rows(results: Sequence[ScreenResult]) -> list[tuple[str, ...]]:
    """One row per backbone; the best value of each score column is marked with ``*``."""
    best = {
        name: max((r.value(name) for r in results if math.isfinite(r.value(name))), default=math.nan)
        for name in ("logme", "knn_loo_acc", "knn_acc", "probe_cv_acc", "as_is_acc")
    }

    def cell(result: ScreenResult, name: str) -> str:
        value = result.value(name)
        mark = "*" if len(results) > 1 and math.isfinite(value) and value == best[name] else ""
        return _number(value) + mark

    rows: list[tuple[str, ...]] = []
    for r in results:
        score_seconds = sum(t.seconds for t in r.scores.values()) + (r.as_is.seconds if r.as_is else 0.0)
        rows.append(
            (
                r.backbone,
                str(r.resolution),
                str(r.n_train),
                str(r.n_val),
                cell(r, "logme"),
                cell(r, "knn_loo_acc"),
                cell(r, "knn_acc"),
                cell(r, "probe_cv_acc"),
                cell(r, "as_is_acc"),
                f"{r.forward_flops / 1e9:.1f}",
                f"{r.extract_seconds:.1f}",
                f"{score_seconds:.2f}",
                r.cache_status,
            )
        )
    return rows


def format_table(results: Sequence[ScreenResult]) -> str:
    """Aligned columns, numbers right-aligned; ``*`` marks the best backbone per score."""
    rows = [HEADER, *screen_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- run_screen ---------------------------------------------------------------------------------------------

# All configurations are composed and validated before the first forward pass, so a misspelt backbone
# fails at once. Backbones are screened one after the other and nothing is kept alive between them.

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def backbone_groups() -> list[str]:
    """The ``conf/backbone`` options (``efficientnet_lite0``, ``resnet18``, ...)."""
    return sorted(p.stem for p in (config_dir() / "backbone").glob("*.yaml"))


def screen_configs(overrides: Sequence[str], backbones: Sequence[str]) -> list[RunConfig]:
    """One validated linear-probe config per backbone: ``overrides``, the backbone, the screen's own."""
    groups = backbone_groups()
    configs = []
    for item in backbones:
        chosen = [*overrides, *backbone_overrides(item, groups=groups)]
        cfg = load_config([*chosen, *SCREEN_OVERRIDES])
        if cfg.backbone.weights == WeightsSource.none:
            raise ConfigError(
                f"the screen scores pretrained features, but backbone '{item}' has weights=none (random "
                "init); give it embedded, hub or file weights (name@/path/checkpoint)"
            )
        configs.append(resolve_defaults(cfg))  # photo folders: the backbone's pretrained input size
    return configs


def screen_backbone(
    cfg: RunConfig, *, class_map: Mapping[str, Sequence[str]] | None, settings: ScoreSettings
) -> ScreenResult:
    """Features of the train pool and validation (one forward pass, cached), then every score."""
    trial = prepare(cfg)
    cfg, device, precision, splits, model = (
        trial.cfg,
        trial.device,
        trial.precision,
        trial.splits,
        trial.model,
    )
    plan = plan_inputs(
        cfg, model, splits, device=device, precision=precision, channels_last=trial.channels_last
    )
    features = extract(model.network, splits, plan, feature_cache(cfg.trainer))
    scores = feature_scores(
        features.train, features.train_labels, features.val, features.val_labels, settings
    )
    as_is = as_is_accuracy(cfg, splits, class_map, device=device, precision=precision) if class_map else None
    notes = tuple(f"{name}: {t.note}" for name, t in scores.items() if t.note)
    result = ScreenResult(
        backbone=cfg.backbone.name,
        weights=model.weights.value,
        dataset=cfg.data.name.value,
        data_root=cfg.data.root or "",
        n_per_class=str(cfg.data.n_per_class) if cfg.data.n_per_class is not None else "all",
        resolution=features.resolution,
        seed=cfg.seed,
        n_train=int(features.train_labels.size),
        n_val=int(features.val_labels.size),
        n_classes=len(features.class_names),
        num_features=int(features.train.shape[1]),
        fingerprint=features.fingerprint,
        device=features.device,
        settings=settings,
        probe_folds=effective_folds(features.train_labels, settings),
        scores=scores,
        as_is=as_is,
        forward_flops=features.forward_flops,
        extract_seconds=features.extract_seconds,
        standalone_extract_seconds=features.standalone_seconds,
        cache_status=features.cache_status,
        notes=notes,
    )
    del splits, model, plan
    gc.collect()
    return result


def _log(
    result: ScreenResult,
    *,
    experiment: str,
    tracking_uri: str | None,
    parent_run_id: str | None,
    tags: Mapping[str, str],
) -> str:
    run = MlflowRun.start(
        experiment=experiment,
        run_name=f"screen:{result.backbone}",
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        tags=screen_tags(result, dict(tags)),
    )
    try:
        run.log_params(screen_params(result))
        run.log_metrics(screen_metrics(result))
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return run.run_id


def run_screen(
    overrides: Sequence[str],
    backbones: Sequence[str],
    *,
    class_map: Mapping[str, Sequence[str]] | None = None,
    settings: ScoreSettings | None = None,
    experiment: str = "tlbench",
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    track: bool = True,
    progress: Progress = lambda message: None,
) -> list[ScreenResult]:
    """Screen ``backbones`` on the data ``overrides`` name; log each as a ``role=screen`` run.

    Args:
        overrides: Hydra overrides for the data (and anything else, e.g. ``data.n_per_class=50``);
            a sweep passes its ``base`` overrides so the screen sees the data its trials train on.
        backbones: config groups (``efficientnet_lite1``), timm names, or ``name@/checkpoint``.
        class_map: target class -> source (ImageNet) classes; adds ``screen/as_is_acc``.
        settings: kNN and probe settings (defaults: k=5, 5 folds).
        experiment: the MLflow experiment (a sweep passes its study's experiment).
        tracking_uri: None = ``$MLFLOW_TRACKING_URI`` or MLflow's default.
        parent_run_id: the study's parent run, when called by a sweep.
        tags: extra tags for every screen run (e.g. the study tag).
        track: False logs nothing (``run_id`` stays None).
        progress: called with one line per backbone.
    """
    if not backbones:
        raise ValueError("run_screen needs at least one backbone")
    settings = settings or ScoreSettings()
    if track:
        check_reachable(tracking_uri)
    configs = screen_configs(overrides, backbones)
    results = []
    for index, cfg in enumerate(configs, start=1):
        progress(f"[{index}/{len(configs)}] {cfg.backbone.name} ({cfg.backbone.weights.value} weights)")
        result = screen_backbone(cfg, class_map=class_map, settings=settings)
        if track:
            run_id = _log(
                result,
                experiment=experiment,
                tracking_uri=tracking_uri,
                parent_run_id=parent_run_id,
                tags=tags or {},
            )
            result = replace(result, run_id=run_id)
        log.info("screen %s: %s", result.backbone, {k: round(v.value, 4) for k, v in result.scores.items()})
        results.append(result)
    return results
