"""The exported winner as an MLflow pyfunc: encoded images in, class and probabilities out.

This file is the model's code (MLflow's "models from code"): it is copied into the logged model and
runs where the model is loaded — ``mlflow models serve``, ``mlflow.pyfunc.load_model``, ``tlbench
predict`` — without tlbench installed. It needs only torch, numpy, pandas, Pillow and mlflow. Its
two artifacts are the network (a ``torch.export`` program that takes uint8 ``[N, 3, R, R]`` pixels
and returns class probabilities, the backbone's normalisation inside) and ``labels.json`` (class
names, resolution). Images are decoded by tlbench's own ``data/decode.py``, shipped with the model
as ``tlbench_decode.py`` (``code_paths``), so a photo is turned into pixels exactly as in training.

Input: a DataFrame with a binary column ``image`` (the encoded file: JPEG, PNG, ...; base64 in a
JSON request to the server). Output, one row per image: ``class``, ``probability`` (of that class),
``probabilities`` ({class: probability}) and ``error`` (why an image could not be read; its other
fields are null), so one bad file never costs the rest of a batch.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

NETWORK, LABELS = "network", "labels"  # artifact keys
IMAGE_COLUMN = "image"
BATCH = 32  # images per forward pass: bounds memory on large requests


class ImageClassifier(PythonModel):  # type: ignore[misc]  # mlflow ships no type hints
    def load_context(self, context: Any) -> None:
        import torch
        from tlbench_decode import decode_bytes  # type: ignore[import-not-found]  # in the model's code/

        labels = json.loads(Path(context.artifacts[LABELS]).read_text())
        self._class_names: list[str] = list(labels["class_names"])
        self._resolution = int(labels["resolution"])
        self._decode = decode_bytes
        self._network = torch.export.load(context.artifacts[NETWORK]).module()
        self._torch = torch

    # A DataFrame hint: MLflow infers no schema from it (the logged signature says what comes in).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        import numpy as np

        images = _encoded_images(model_input)
        pixels: list[Any] = []
        rows: list[dict[str, Any]] = []
        for data in images:
            try:
                pixels.append(self._decode(data, resolution=self._resolution))
                rows.append({})
            except Exception as exc:  # any undecodable input is that row's error
                rows.append({"error": f"not an image Pillow can read ({type(exc).__name__}: {exc})"})
        probabilities = self._classify(np.stack(pixels)) if pixels else np.zeros((0, 0))
        decoded = iter(probabilities)
        for row in rows:
            if "error" in row:
                row.update({"class": None, "probability": None, "probabilities": None})
                continue
            p = next(decoded)
            best = int(p.argmax())
            row.update(
                {
                    "class": self._class_names[best],
                    "probability": float(p[best]),
                    "probabilities": {name: float(v) for name, v in zip(self._class_names, p, strict=True)},
                    "error": None,
                }
            )
        # object columns: a failed row's fields stay None (JSON null), never NaN (not valid JSON)
        return pd.DataFrame(rows, columns=["class", "probability", "probabilities", "error"], dtype=object)

    def _classify(self, pixels: Any) -> Any:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), BATCH):
                batch = torch.from_numpy(pixels[start : start + BATCH])
                out.append(self._network(batch).float().numpy())
        import numpy as np

        return np.concatenate(out)


def _encoded_images(model_input: Any) -> list[bytes]:
    """The encoded images of a request: a DataFrame's ``image`` column (or its only column), a list,
    or one image. Text is read as base64 (a JSON client that sent the file that way)."""
    if isinstance(model_input, pd.DataFrame):
        column = IMAGE_COLUMN if IMAGE_COLUMN in model_input.columns else model_input.columns[0]
        values = list(model_input[column])
    elif isinstance(model_input, (bytes, bytearray, str)):
        values = [model_input]
    else:
        values = list(model_input)
    return [base64.b64decode(v) if isinstance(v, str) else bytes(v) for v in values]


mlflow.models.set_model(ImageClassifier())
