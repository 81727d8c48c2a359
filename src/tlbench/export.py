"""The winner delivered: the report's recommended arm, retrained on all labelled images, as an MLflow model
(``tlbench export``), and image files classified with it (``tlbench predict``).

``export_winner(study)``: the arm the report recommends at a data size
(:func:`tlbench.report.recommended_arm`, never a rule of its own) -> its final runs' configuration
with every choice fixed (the probe L2 its finals chose, the steps they ran, no early stopping) and
``data.train_on_val=true`` -> one more trial (``role=export`` in the study's experiment,
:func:`tlbench.run.train` with ``keep_model=True``) -> the network with its normalisation as a
``torch.export`` program -> a pyfunc model registered under the study's name, alias ``champion``
(:mod:`tlbench.tracking.registry`).

Why ``torch.export``: serving then needs torch and mlflow, not tlbench or timm (a pickled module
would need the classes it was built from, i.e. this checkout). It is PyTorch's supported format for
a whole program (``torch.jit`` is deprecated since torch 2.10 and warns on every call); a state dict
plus a timm name would need timm and tlbench's heads and strategies (LoRA, BitFit) to rebuild.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tlbench.errors import ConfigError, TlbenchError
from tlbench.tracking import names as N

if TYPE_CHECKING:
    from tlbench.config.schema import RunConfig
    from tlbench.report import RecommendedArm
    from tlbench.run import TrainedModel
import csv
import math
from collections.abc import Iterable, Iterator
from typing import TextIO

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
_MAX_BATCH = 4096  # the exported program's largest batch (any size from 1 up to it)
PROBE_L2 = "probe/l2"  # the L2 penalty a run's probe chose on validation (training/record.py)


@dataclass(frozen=True)
class Exported:
    """What ``export_winner`` registered."""

    study: str
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
    progress: Progress = print,
) -> Exported:
    """Retrain the report's recommended arm of ``study`` on train + validation and register it.

    Args:
        size: Data size (images per class, or "all"); default the largest with final runs.
        strategy: Export this arm instead of the recommended one (its verdict says so).
        progress: Where the few progress lines go.

    Raises:
        TlbenchError: The study, size or strategy does not exist, the arm cannot be retrained as its
            finals ran (e.g. ``as_is``: nothing to retrain), or the retrained trial did not complete.
    """
    from tlbench.report import recommended_arm
    from tlbench.run import train
    from tlbench.tracking.registry import ModelLabels, log_champion
    from tlbench.tracking.runs import latest_metrics

    arm = recommended_arm(study, size=size, strategy=strategy, tracking_uri=tracking_uri)
    progress(f"export: study '{study}', {arm.strategy} at n={arm.n_per_class} — {arm.verdict}")
    finals = [latest_metrics(run_id, tracking_uri=tracking_uri) for run_id in arm.final_run_ids]
    cfg = export_config(arm, finals=finals, tracking_uri=tracking_uri)
    progress(f"export: retraining on train + validation ({_choices_text(cfg)})")
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
            labels=ModelLabels(class_names=model.class_names, resolution=model.resolution),
            example_image=example_image(model.resolution),
            registered_name=study,
            description=model_description(
                arm,
                cfg,
                test_acc=result.metrics.get(N.TEST_ACC),
                steps=result.metrics.get(N.TRAIN_STEPS),
            ),
            tags=version_tags(arm),
            tracking_uri=tracking_uri,
        )
    progress(f"export: registered {champion.uri} (version {champion.version}, run {champion.run_id})")
    return Exported(
        study=study,
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
    """The arm's final-run configuration, every choice fixed, trained on train + validation.

    ``finals`` are the latest metrics of the arm's final runs: the probe L2 they chose (the upper
    median: ties go to the stronger penalty, as the probe's own grid search does) and the steps they
    ran (upper median) become fixed values, since nothing is left to choose on once validation is
    training data.
    """
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
    l2 = _upper_median([m[PROBE_L2] for m in finals if PROBE_L2 in m])
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
    """The model version's description: what was exported, the verdict, and that it saw validation data.

    ``test_acc`` and ``steps`` are the export run's own (its step budget is whole epochs of the larger
    training set, so it can run a few more steps than asked).
    """
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
        "final_test_acc_mean": f"{arm.acc_mean:.4f}",
        "final_seeds": str(arm.seeds),
        "final_run_ids": ",".join(arm.final_run_ids),
    }


def save_network(model: TrainedModel, path: Path) -> None:
    """Write ``model`` as a ``torch.export`` program: uint8 ``[N, 3, R, R]`` -> class probabilities.

    The normalisation is the data package's own :func:`~tlbench.data.normalize`, traced into the
    program, so the pyfunc only decodes images; the batch size is dynamic (1 to 4096).
    """
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
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    program = torch.export.export(Classifier().eval(), (sample,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def example_image(resolution: int) -> bytes:
    """A small PNG for the model's input example (MLflow runs the model on it when logging)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (resolution, resolution), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


# ``tlbench predict``: classify image files with a registered model, one CSV row (path, class,
# probability) each. A folder is read recursively for the files Pillow knows by their extension; a file
# named on the command line is always tried. A file that cannot be read or is not an image is reported
# on its own line and the rest are still classified: the model itself says which images it could not
# decode, so "what is an image" has one definition, the one training used.

BATCH = 64  # files read and classified together: bounds memory for large folders
HEADER = ("path", "class", "probability")


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
    """Files as given; folders walked (sorted, hidden entries left out) for image extensions."""
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
    import pandas as pd

    chunk: list[tuple[Path, bytes]] = []
    for path in files:
        try:
            chunk.append((path, path.read_bytes()))
        except OSError as exc:
            yield Prediction(str(path), None, None, f"cannot read: {exc.strerror or exc}")
            continue
        if len(chunk) == batch:
            yield from _classify(model, chunk, pd)
            chunk = []
    if chunk:
        yield from _classify(model, chunk, pd)


def _classify(model: Any, chunk: list[tuple[Path, bytes]], pd: Any) -> Iterator[Prediction]:
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
    writer.writerow(HEADER)
    for prediction in predictions:
        if prediction.ok and prediction.probability is not None and math.isfinite(prediction.probability):
            writer.writerow((prediction.path, prediction.label, f"{prediction.probability:.4f}"))
            out.flush()
        yield prediction
