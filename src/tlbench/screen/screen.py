"""``run_screen``: every candidate backbone scored without training, each as one MLflow run (``role=screen``):
what a user types -> Hydra overrides, the trial pipeline's features through the feature cache, the
scores (:mod:`tlbench.screen.scores`), ``as_is`` with a class map, what a run logs, the CLI's table."""

from __future__ import annotations

import gc
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
from tlbench.data import BatchTransform, DataSplits, InMemoryLoader
from tlbench.errors import ConfigError, ModelError
from tlbench.screen.scores import ScoreSettings, Timed, cv_folds, feature_scores
from tlbench.tracking import MlflowRun, check_reachable
from tlbench.tracking import names as N
from tlbench.training.device import DeviceInfo, device_hours
from tlbench.training.flops import measure_forward_flops
from tlbench.training.inputs import FeatureCache, InputPlan, cached_inputs, feature_cache, plan_inputs
from tlbench.training.network import EMBEDDED, Trial, build_model, prepare, resolve_defaults
from tlbench.training.record import evaluate

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
class Extraction:
    """What extracting the features cost, and where."""

    forward_flops: float  # train + val, whether computed now or reused
    seconds: float  # wall time of this call's extraction (about 0 on a cache hit)
    standalone_seconds: float  # what the extraction cost when it was computed (this run or earlier)
    cache_status: str  # miss | hit | partial
    device: DeviceInfo


@dataclass(frozen=True)
class ScreenFeatures:
    """Features (float64, on the CPU) and labels of the train pool and the validation split."""

    train: NDArray[np.float64]
    train_labels: NDArray[np.int64]
    val: NDArray[np.float64]
    val_labels: NDArray[np.int64]
    extraction: Extraction


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
    x = [np.asarray(t.detach().float().cpu().numpy(), dtype=np.float64) for t in (train, val)]
    y = [np.asarray(t.detach().cpu().numpy(), dtype=np.int64) for t in (train_y, val_y)]
    extraction = Extraction(flops, seconds, seconds + use.reused_seconds, use.status, how.device)
    return ScreenFeatures(x[0], y[0], x[1], y[1], extraction)


@dataclass(frozen=True)
class AsIsScore:
    accuracy: float  # on the validation split
    seconds: float  # build + forward pass
    flops: float  # forward FLOPs over validation


def as_is_accuracy(trial: Trial, class_map: Mapping[str, Sequence[str]]) -> AsIsScore:
    """Validation accuracy of the backbone's own classifier with ``class_map`` (no training): the feature
    backbone drops that classifier, so the network is built again with the ``as_is`` strategy."""
    start, device, val = time.perf_counter(), trial.device, trial.splits.val
    strategy = StrategyConfig(
        name=StrategyName.as_is, class_map={k: [str(v) for v in vs] for k, vs in class_map.items()}
    )
    cfg = replace(trial.cfg, strategy=strategy)
    model = build_model(cfg, class_names=trial.splits.class_names)
    network = model.network.to(device.torch_device).eval()
    transform = BatchTransform(mean=model.mean, std=model.std)
    batches = InMemoryLoader(
        val.images, val.labels, batch_size=cfg.trainer.eval_batch_size, transform=transform
    )
    # the trial's own evaluation: the screen's as_is accuracy is the number an as_is trial would log
    accuracy = evaluate(network, batches, device_type=device.kind, precision=trial.precision).accuracy
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
    params: dict[str, Any]  # the rest of the run's params: the data, its sizes and the score settings
    scores: dict[str, Timed]
    as_is: AsIsScore | None
    extraction: Extraction
    run_id: str | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(f"{name}: {t.note}" for name, t in self.scores.items() if t.note)

    @property
    def screen_seconds(self) -> float:
        """Wall seconds this screen spent: extraction (this run's) + every score."""
        extra = self.as_is.seconds if self.as_is else 0.0
        return self.extraction.seconds + sum(t.seconds for t in self.scores.values()) + extra

    def value(self, name: str) -> float:
        if name == "as_is_acc":
            return self.as_is.accuracy if self.as_is else float("nan")
        return self.scores[name].value if name in self.scores else float("nan")


def screen_metrics(result: ScreenResult) -> dict[str, float]:
    scores, seconds, extraction, as_is = result.scores, result.screen_seconds, result.extraction, result.as_is
    return {
        **{f"screen/{name}": t.value for name, t in scores.items() if math.isfinite(t.value)},
        **{f"cost/{name}_seconds": t.seconds for name, t in scores.items()},
        **({"screen/as_is_acc": as_is.accuracy, "cost/as_is_seconds": as_is.seconds} if as_is else {}),
        **({"cost/as_is_flops": as_is.flops} if as_is else {}),
        "cost/forward_flops": extraction.forward_flops,
        "cost/extract_seconds": extraction.seconds,
        "cost/standalone_extract_seconds": extraction.standalone_seconds,
        "cost/screen_seconds": seconds,
        N.DEVICE_HOURS: device_hours(seconds, extraction.device.count),
    }


def screen_tags(result: ScreenResult, extra: dict[str, str]) -> dict[str, str]:
    notes, device = "; ".join(result.notes), result.extraction.device
    return {
        N.ROLE: N.SCREEN,
        N.STATUS: N.COMPLETED,
        N.DEVICE: device.name,
        N.DEVICE_COUNT: str(device.count),
        "device_model": device.model,
        "feature_cache": result.extraction.cache_status,
        "n_per_class": result.params["n_per_class"],
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
        for name in (*SCORE_NAMES, "as_is_acc")
    }

    def cell(result: ScreenResult, name: str) -> str:
        value = result.value(name)
        mark = "*" if len(results) > 1 and math.isfinite(value) and value == best[name] else ""
        return _number(value) + mark

    rows = []
    for r in results:
        score_seconds = sum(t.seconds for t in r.scores.values()) + (r.as_is.seconds if r.as_is else 0.0)
        rows.append(
            (
                r.backbone,
                *(str(r.params[name]) for name in ("resolution", "n_train", "n_val")),
                *(cell(r, name) for name in (*SCORE_NAMES, "as_is_acc")),
                f"{r.extraction.forward_flops / 1e9:.1f}",
                f"{r.extraction.seconds:.1f}",
                f"{score_seconds:.2f}",
                r.extraction.cache_status,
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


# --- run_screen: every config is validated before the first forward pass (a misspelt backbone fails at
# once); backbones are screened one after the other and nothing is kept alive between them.

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def screen_configs(overrides: Sequence[str], backbones: Sequence[str]) -> list[RunConfig]:
    """One validated linear-probe config per backbone: ``overrides``, the backbone, the screen's own."""
    groups = sorted(p.stem for p in (config_dir() / "backbone").glob("*.yaml"))  # conf/backbone options
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
    cfg, splits, model = trial.cfg, trial.splits, trial.model
    plan = plan_inputs(
        cfg, model, splits, device=trial.device, precision=trial.precision, channels_last=trial.channels_last
    )
    features = extract(model.network, splits, plan, feature_cache(cfg.trainer))
    scores = feature_scores(
        features.train, features.train_labels, features.val, features.val_labels, settings
    )
    as_is = as_is_accuracy(trial, class_map) if class_map else None
    params = {
        "dataset": cfg.data.name.value,
        "data_root": cfg.data.root or "",
        "n_per_class": str(cfg.data.n_per_class) if cfg.data.n_per_class is not None else "all",
        "resolution": int(splits.train.images.shape[-1]),
        "seed": cfg.seed,
        "n_train": int(features.train_labels.size),
        "n_val": int(features.val_labels.size),
        "n_classes": len(splits.class_names),
        "num_features": int(features.train.shape[1]),
        "data_fingerprint": str(splits.fingerprint),
        "knn_k": settings.knn_k,
        "probe_folds": cv_folds(features.train_labels, max_folds=settings.probe_folds),  # the folds used
        "probe_c": settings.probe_c,
        "screen_scores": ",".join([*SCORE_NAMES, *(["as_is_acc"] if as_is else [])]),
    }
    result = ScreenResult(cfg.backbone.name, model.weights.value, params, scores, as_is, features.extraction)
    del trial, splits, model, plan, features
    gc.collect()
    return result


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
    """Screen ``backbones`` on the data ``overrides`` name (a sweep passes its ``base``, so the screen sees
    its trials' data); log each as a ``role=screen`` run unless ``track`` is False. ``backbones``: config
    groups, timm names or ``name@/checkpoint``; ``class_map`` (target -> ImageNet classes) adds ``as_is``;
    ``tags`` go on every run; ``progress`` gets one line per backbone."""
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
            run = MlflowRun.start(
                experiment=experiment,
                run_name=f"screen:{result.backbone}",
                tracking_uri=tracking_uri,
                parent_run_id=parent_run_id,
                tags=screen_tags(result, dict(tags or {})),
            )
            try:
                run.log_params({"backbone": result.backbone, "weights": result.weights, **result.params})
                run.log_metrics(screen_metrics(result))
            except BaseException:
                run.end("FAILED")
                raise
            run.end("FINISHED")
            result = replace(result, run_id=run.run_id)
        log.info("screen %s: %s", result.backbone, {k: round(v.value, 4) for k, v in result.scores.items()})
        results.append(result)
    return results
