"""``run_screen``: every candidate backbone scored without training, each as one MLflow run (``role=screen``).

All configurations are composed and validated before the first forward pass, so a misspelt backbone
fails at once. Backbones are screened one after the other and nothing is kept alive between them.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from tlbench.config import load_config
from tlbench.config.compose import config_dir
from tlbench.config.schema import RunConfig, WeightsSource
from tlbench.errors import ConfigError
from tlbench.screen.as_is import as_is_accuracy
from tlbench.screen.compose import backbone_overrides
from tlbench.screen.features import SCREEN_OVERRIDES, extract
from tlbench.screen.record import ScreenResult, screen_metrics, screen_params, screen_tags
from tlbench.screen.scores import ScoreSettings, effective_folds, feature_scores
from tlbench.tracking import MlflowRun, check_reachable
from tlbench.training.prepare import prepare, resolve_defaults

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
    prepared = prepare(cfg)
    features = extract(prepared)
    scores = feature_scores(features, settings)
    as_is = as_is_accuracy(prepared, class_map) if class_map else None
    notes = tuple(f"{name}: {t.note}" for name, t in scores.items() if t.note)
    result = ScreenResult(
        backbone=cfg.backbone.name,
        weights=prepared.model.weights.value,
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
    del prepared
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
