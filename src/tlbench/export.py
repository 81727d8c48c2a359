"""The winner delivered (``tlbench export``): the arm the report recommends
(:func:`tlbench.report.recommended_arm`), retrained once on train + validation with every choice its
finals made fixed, as a ``torch.export`` program in a pyfunc model registered under the study's name,
alias ``champion``; and image files classified with it (``tlbench predict``).

Why ``torch.export``: serving then needs torch and mlflow, not tlbench or timm (a pickled module needs
this checkout's classes; a state dict needs timm and tlbench's heads, LoRA, BitFit to rebuild), and
``torch.jit`` is deprecated since torch 2.10.
"""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from tlbench.errors import ConfigError, TlbenchError
from tlbench.tracking import names as N

if TYPE_CHECKING:
    from tlbench.config.schema import RunConfig
    from tlbench.report import RecommendedArm
    from tlbench.run import TrainedModel


@dataclass(frozen=True)
class Exported:
    """What ``export_winner`` registered."""

    model_uri: str  # models:/<study>@champion
    version: str
    run_id: str  # the export run
    strategy: str
    n_per_class: str
    test_acc: float | None  # the retrained network on the held-out test split (it saw no test image)
    verdict: str  # the report's verdict on the arm (in the model version's description)


def export_winner(
    study: str,
    *,
    size: int | str | None = None,
    strategy: str | None = None,
    tracking_uri: str | None = None,
    progress: Callable[[str], None] = print,
) -> Exported:
    """Retrain the recommended arm of ``study`` (at ``size``, default the largest; ``strategy``: that arm
    instead) on train + validation and register it; a :class:`TlbenchError` when any step cannot be done."""
    from tlbench.report import recommended_arm
    from tlbench.run import train
    from tlbench.tracking.registry import log_champion
    from tlbench.tracking.runs import latest_metrics

    arm = recommended_arm(study, size=size, strategy=strategy, tracking_uri=tracking_uri)
    progress(f"export: study '{study}', {arm.strategy} at n={arm.n_per_class} — {arm.verdict}")
    finals = [latest_metrics(run_id, tracking_uri=tracking_uri) for run_id in arm.final_run_ids]
    cfg = export_config(arm, finals=finals, tracking_uri=tracking_uri)
    progress(f"export: {export_step(cfg)}")
    result = train(cfg, keep_model=True)
    if not result.completed or result.model is None or result.run_id is None:
        raise TlbenchError(
            f"the export trial of study '{study}' ended '{result.status}' (run {result.run_id}); "
            "nothing was registered"
        )
    model = result.model
    with tempfile.TemporaryDirectory(prefix="tlbench-export-") as folder:
        network_file = Path(folder) / "network.pt2"
        save_network(model, network_file)
        champion = log_champion(
            run_id=result.run_id,
            network_file=network_file,
            class_names=model.class_names,
            resolution=model.resolution,
            registered_name=study,
            description=model_description(
                arm, cfg, test_acc=result.metrics.get(N.TEST_ACC), steps=result.metrics.get(N.TRAIN_STEPS)
            ),
            tags=version_tags(arm),
            tracking_uri=tracking_uri,
        )
    progress(f"export: registered {champion.uri} (version {champion.version}, run {champion.run_id})")
    return Exported(
        model_uri=champion.uri,
        version=champion.version,
        run_id=champion.run_id,
        strategy=arm.strategy,
        n_per_class=arm.n_per_class,
        test_acc=result.metrics.get(N.TEST_ACC),
        verdict=arm.verdict,
    )


def export_config(
    arm: RecommendedArm, *, finals: Sequence[dict[str, float]], tracking_uri: str | None
) -> RunConfig:
    """The arm's final-run configuration on train + validation, every choice fixed: the probe L2 and the
    steps its ``finals`` (their latest metrics) chose, each the upper median (ties to the stronger
    penalty, as the probe's grid search does)."""
    from omegaconf import DictConfig, OmegaConf

    from tlbench.config.compose import register_schema, to_run_config
    from tlbench.config.schema import RunConfig

    if not arm.config_yaml:
        raise TlbenchError(
            f"final run {arm.config_run_id} of study '{arm.study}' has no {N.CONFIG_ARTIFACT}: "
            "the arm cannot be retrained as it ran"
        )
    register_schema()
    plain = yaml.safe_load(arm.config_yaml)
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
    fixed: dict[str, Any] = {
        "seed": arm.finals[0].seed,
        "data.train_on_val": True,
        "trainer.early_stopping": False,
        "tracking.enabled": True,
        "tracking.experiment": arm.study,
        "tracking.tracking_uri": tracking_uri,
        "tracking.parent_run_id": None,
        "tracking.run_name": f"export {arm.strategy_name} n={arm.n_per_class}",
        "tags": {N.ROLE: N.EXPORT, N.STUDY_TAG: arm.study, N.CELL: arm.cell},
    }
    l2 = _upper_median([m[N.PROBE_L2] for m in finals if N.PROBE_L2 in m])
    if l2 is not None:
        fixed["strategy.probe.l2"] = l2
    steps = _upper_median([float(f.steps) for f in arm.finals if f.steps is not None])
    if steps is not None:
        fixed["trainer.min_steps"] = int(steps)
        fixed["trainer.epochs"] = 1  # the step budget alone decides how long it trains
    for key, value in fixed.items():
        OmegaConf.update(cfg, key, value, merge=False)
    assert isinstance(cfg, DictConfig)  # merged onto the RunConfig schema: a mapping
    try:
        return to_run_config(cfg)
    except ConfigError as exc:
        raise ConfigError(
            f"the {arm.strategy} arm of study '{arm.study}' cannot be retrained as its final runs ran "
            f"(final run {arm.config_run_id}): {exc}"
        ) from None


def _upper_median(values: Sequence[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def export_step(cfg: RunConfig) -> str:
    """What the export trial does, for its progress line (as_is trains nothing)."""
    if cfg.strategy.name.value == "as_is":
        return "the pretrained classifier as it is, its classes mapped (nothing to retrain)"
    return f"retraining on train + validation ({_choices_text(cfg)})"


def _choices_text(cfg: RunConfig) -> str:
    parts = [f"seed {cfg.seed}"]
    if cfg.trainer.min_steps is not None:
        parts.append(f"{cfg.trainer.min_steps} steps")
    if cfg.strategy.probe.l2 is not None:
        parts.append(f"probe L2 {cfg.strategy.probe.l2:g}")
    return ", ".join(parts)


def model_description(
    arm: RecommendedArm, cfg: RunConfig, *, test_acc: float | None, steps: float | None = None
) -> str:
    """The model version's description: what was exported, the verdict, that it saw validation data, and
    the export run's own ``test_acc`` and ``steps`` (whole epochs: it can run a few more than asked)."""
    if arm.strategy_name == "as_is":  # nothing trains: the pretrained classifier, its classes mapped
        retrained = (
            "The pretrained classifier used as it is: nothing was trained; each of your classes scores "
            "the log-sum-exp of the logits of the ImageNet classes strategy.class_map maps it to"
        )
    else:
        ran = f"; it ran {steps:.0f} optimizer steps" if steps is not None else ""
        retrained = (
            f"Retrained once on all labelled images — the train subset plus the validation split "
            f"(data.train_on_val=true) — with the arm's chosen configuration ({_choices_text(cfg)}, no "
            f"early stopping){ran}; the test split was never trained on"
        )
    own = f": {test_acc:.1%} test accuracy." if test_acc is not None else "."
    chosen = " (the report recommends it)" if arm.recommended else " (asked for; not the recommendation)"
    return (
        f"Study '{arm.study}': {arm.strategy} at n={arm.n_per_class} images per class{chosen}.\n\n"
        f"Verdict: {arm.verdict}\n\n{retrained}{own}\n\n"
        "Input: a DataFrame with a binary column 'image' (encoded JPEG/PNG/...; base64 in JSON). Output per "
        "image: class, probability, probabilities {class: p}, error (an unreadable image)."
    )


def version_tags(arm: RecommendedArm) -> dict[str, str]:
    """The verdict and its interval as model version tags (searchable in the registry)."""
    low, high = arm.acc_low, arm.acc_high
    interval = f"{low:.4f}..{high:.4f}" if low is not None and high is not None else "single seed"
    return {
        N.VERDICT: arm.verdict,
        N.VERDICT_INTERVAL: interval,
        N.RECOMMENDED_STRATEGY: arm.strategy,
        N.EXPORT_N_PER_CLASS: arm.n_per_class,
        N.TRAINED_ON: "train+validation",
        N.FINAL_TEST_ACC_MEAN: f"{arm.acc_mean:.4f}",
        N.FINAL_SEEDS: str(arm.seeds),
        N.FINAL_RUN_IDS: ",".join(arm.final_run_ids),
    }


def save_network(model: TrainedModel, path: Path) -> None:
    """``model`` as a ``torch.export`` program: uint8 ``[N, 3, R, R]`` -> class probabilities, with
    :func:`~tlbench.data.normalize` traced in (the pyfunc only decodes), any batch from 1 to 4096."""
    import torch

    from tlbench.data import normalize

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = model.network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            logits = self.network(normalize(pixels, mean=model.mean, std=model.std))
            return torch.softmax(logits.float(), dim=1)

    side = model.resolution
    sample = torch.zeros((2, 3, side, side), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(Classifier().eval(), (sample,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


# ``tlbench predict``: one CSV row (path, class, probability) per image. The model itself says which
# files it could not decode, so "what is an image" has one definition, the one training used.

BATCH = 64  # files read and classified together: bounds memory for large folders


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str | None  # the class; None when the file could not be classified
    probability: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Inputs:
    """The files to classify, the paths that do not exist, and folder files skipped by extension."""

    files: list[Path]
    missing: list[Path]
    skipped: list[Path]


def collect(paths: Sequence[Path]) -> Inputs:
    """Files as given (always tried); folders walked (sorted, no hidden entries) for image extensions."""
    from PIL import Image

    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[Path] = []
    missing: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)):
                (files if found.suffix.lower() in extensions else skipped).append(found)
        elif path.exists():
            files.append(path)
        else:
            missing.append(path)
    return Inputs(files=files, missing=missing, skipped=skipped)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def predict_files(model: Any, files: Iterable[Path], *, batch: int = BATCH) -> Iterator[Prediction]:
    """Classify ``files`` with a pyfunc ``model`` (see :mod:`tlbench.tracking.champion_pyfunc`), in order."""
    chunk: list[tuple[Path, bytes]] = []
    for path in files:
        try:
            chunk.append((path, path.read_bytes()))
        except OSError as exc:
            yield Prediction(str(path), None, None, f"cannot read: {exc.strerror or exc}")
            continue
        if len(chunk) == batch:
            yield from _classify(model, chunk)
            chunk = []
    if chunk:
        yield from _classify(model, chunk)


def _classify(model: Any, chunk: list[tuple[Path, bytes]]) -> Iterator[Prediction]:
    import pandas as pd

    out = model.predict(pd.DataFrame({"image": [data for _, data in chunk]}))
    for (path, _), row in zip(chunk, out.to_dict("records"), strict=True):
        error = row.get("error")
        if isinstance(error, str) and error:
            yield Prediction(str(path), None, None, error)
        else:
            yield Prediction(str(path), str(row["class"]), float(row["probability"]))


def write_csv(predictions: Iterable[Prediction], out: TextIO) -> Iterator[Prediction]:
    """Write the classified ones as CSV rows as they come; yield every prediction (failures too)."""
    writer = csv.writer(out)
    writer.writerow(("path", "class", "probability"))
    for prediction in predictions:
        if prediction.ok and prediction.probability is not None and math.isfinite(prediction.probability):
            writer.writerow((prediction.path, prediction.label, f"{prediction.probability:.4f}"))
            out.flush()
        yield prediction
