"""The winner in MLflow: a pyfunc model logged in its export run, registered, aliased ``champion``.

Its code is :mod:`tlbench.tracking.champion_pyfunc`, given to MLflow as a file and never imported here
(importing it registers it as "the" model of the process)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tlbench.errors import TrackingError
from tlbench.tracking.names import CHAMPION_ALIAS, MODEL_NAME
from tlbench.tracking.runs import _client, redact_password, resolve_tracking_uri

MODEL_CODE = Path(__file__).with_name("champion_pyfunc.py")
_DECODER = Path(__file__).parents[1] / "data" / "decode.py"  # numpy + Pillow only: ships with the model
_DECODER_MODULE = "tlbench_decode.py"  # the name the model code imports it by (no clash with "decode")
_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pillow")  # to load and serve it; no tlbench


@dataclass(frozen=True)
class Champion:
    """A registered model version and where it came from."""

    name: str  # the registered model (the study's name)
    version: str
    run_id: str  # the export run
    logged_model_uri: str  # models:/<model id> (MLflow 3's logged model)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION_ALIAS}"


def log_champion(
    *,
    run_id: str,
    network_file: Path,
    class_names: Sequence[str],
    resolution: int,
    registered_name: str,
    description: str,
    tags: Mapping[str, str],
    tracking_uri: str | None = None,
) -> Champion:
    """Log the pyfunc model of ``network_file`` (a ``torch.export`` program: uint8 pixels -> class
    probabilities) in ``run_id``, register it as a new version of ``registered_name``, alias ``champion``."""
    import mlflow
    import pandas as pd
    from PIL import Image

    uri = resolve_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="tlbench-model-") as scratch:
        folder = Path(scratch)
        labels = {"class_names": list(class_names), "resolution": resolution}
        labels_file = folder / "labels.json"
        labels_file.write_text(json.dumps(labels))
        decoder = folder / _DECODER_MODULE
        shutil.copyfile(_DECODER, decoder)
        example = io.BytesIO()  # MLflow runs the model on its input example when logging it
        Image.new("RGB", (resolution, resolution), (128, 128, 128)).save(example, format="PNG")
        with _fluent_tracking(uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(MODEL_CODE),
                artifacts={"network": str(network_file), "labels": str(labels_file)},
                code_paths=[str(decoder)],
                signature=_signature(),
                input_example=pd.DataFrame({"image": [example.getvalue()]}),
                # this environment's versions, without local labels (2.14.1+cu128 -> 2.14.1)
                pip_requirements=[f"{n}=={metadata.version(n).partition('+')[0]}" for n in _REQUIREMENTS],
                metadata=labels,
            )
            version = mlflow.register_model(info.model_uri, registered_name, tags=dict(tags))
    client = _client(uri)
    client.update_model_version(registered_name, version.version, description=description)
    client.set_registered_model_alias(registered_name, CHAMPION_ALIAS, version.version)
    return Champion(
        name=registered_name, version=str(version.version), run_id=run_id, logged_model_uri=info.model_uri
    )


def load_model(model_uri: str, *, tracking_uri: str | None = None) -> Any:
    """The pyfunc model at ``model_uri`` (``models:/<study>@champion``, ``runs:/<id>/model``, a folder);
    a :class:`TrackingError` naming it when it does not exist or cannot be loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        with _fluent_tracking(uri):
            return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(
            f"no model '{model_uri}' in the MLflow store {redact_password(uri)} ({first}). "
            "A study's winner is models:/<study>@champion once `tlbench export --study <study>` ran; "
            "set MLFLOW_TRACKING_URI to the store the study used"
        ) from None
    except OSError as exc:
        raise TrackingError(f"cannot load model '{model_uri}': {exc}") from None


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Map, Schema

    inputs = Schema([ColSpec(DataType.binary, "image")])
    outputs = Schema(
        [
            ColSpec(DataType.string, "class"),
            ColSpec(DataType.double, "probability"),
            ColSpec(Map(DataType.double), "probabilities"),
            ColSpec(DataType.string, "error", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


@contextmanager
def _fluent_tracking(uri: str) -> Iterator[None]:
    """MLflow's model logging and loading read the process-wide tracking URI: set for the call only, then
    unpinned again and the variable as it was (``mlflow.set_tracking_uri`` also writes it)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils  # no public way to read "nothing set"

    pinned, variable = utils._tracking_uri, os.environ.get(_URI_VARIABLE)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(pinned)  # type: ignore[arg-type]  # None: unpinned (removes the variable)
        if variable is not None:
            os.environ[_URI_VARIABLE] = variable


_URI_VARIABLE = "MLFLOW_TRACKING_URI"
