"""``mlflow models serve -m models:/<study>@champion`` answers a real HTTP request on 127.0.0.1.

Exactly what README tells a user to run, on a tiny registered model whose right answers are known
(red is ants, blue is bees). No network beyond the loopback: ``--env-manager local`` installs nothing.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .champion_helpers import BLUE, RED, photo, register_colour_model
from .servers import free_port, mlflow_env, running


@pytest.fixture
def server(tmp_path: Path, mlflow_uri: str) -> Iterator[str]:
    champion = register_colour_model(tmp_path, tracking_uri=mlflow_uri)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        champion.uri,
        "--env-manager",
        "local",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(
        [*command, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        ready=f"{url}/ping",
        log_path=tmp_path / "serve.log",
        env=mlflow_env(MLFLOW_TRACKING_URI=mlflow_uri),
    ):
        yield url


@pytest.mark.slow  # starts two Python processes (mlflow, uvicorn) that import torch: 15-60 s
def test_the_served_champion_classifies_posted_images(server: str) -> None:
    images = [photo(RED), photo(BLUE, fmt="JPEG"), b"not an image"]
    body = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode(data).decode("ascii")] for data in images],
        }
    }
    request = urllib.request.Request(
        f"{server}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions = json.loads(response.read())["predictions"]
    # red is ants, blue is bees; the unreadable one is its own error, not a failed request
    assert [p["class"] for p in predictions] == ["ants", "bees", None]
    assert predictions[0]["probabilities"]["ants"] > 0.5 and predictions[1]["probabilities"]["bees"] > 0.5
    assert predictions[2]["error"] and predictions[0]["error"] is None
