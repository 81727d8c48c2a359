"""The exported winner as an MLflow pyfunc ("models from code"): this file is copied into the logged model
and runs where it is loaded (``mlflow models serve``, ``tlbench predict``) with torch, numpy, pandas,
Pillow and mlflow only, no tlbench. Its artifacts: the network (a ``torch.export`` program, uint8
``[N, 3, R, R]`` -> class probabilities) and ``labels.json``; images are decoded by tlbench's own
``data/decode.py``, shipped as ``tlbench_decode.py``, so a photo becomes pixels exactly as in training.

Input: a DataFrame with a binary column ``image`` (base64 in JSON). Output per image: ``class``,
``probability``, ``probabilities`` and ``error`` (why it could not be read: one bad file never costs
the rest of a batch).
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
        decoded = iter(self._classify(np.stack(pixels)) if pixels else [])
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

    def _classify(self, pixels: Any) -> list[Any]:
        torch = self._torch
        with torch.inference_mode():
            batches = (torch.from_numpy(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH))
            return [p for batch in batches for p in self._network(batch).float().numpy()]


def _encoded_images(model_input: Any) -> list[bytes]:
    """The encoded images of a request (a DataFrame's ``image`` column, else its first; a list; one image),
    text read as base64."""
    if isinstance(model_input, pd.DataFrame):
        column = IMAGE_COLUMN if IMAGE_COLUMN in model_input.columns else model_input.columns[0]
        values = list(model_input[column])
    elif isinstance(model_input, (bytes, bytearray, str)):
        values = [model_input]
    else:
        values = list(model_input)
    return [base64.b64decode(v) if isinstance(v, str) else bytes(v) for v in values]


mlflow.models.set_model(ImageClassifier())
