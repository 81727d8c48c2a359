"""Classify image files with a registered model: paths in, one CSV row (path, class, probability) each.

A folder is read recursively for the files Pillow knows by their extension; a file named on the
command line is always tried. A file that cannot be read or is not an image is reported on its own
line and the rest are still classified: the model itself says which images it could not decode, so
"what is an image" has one definition, the one training used.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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
