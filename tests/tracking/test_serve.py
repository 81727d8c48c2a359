"""``mlflow models serve -m models:/<study>@champion`` answers a real HTTP request on 127.0.0.1.

Exactly what README tells a user to run, on a tiny registered model whose right answers are known
(red is ants, blue is bees). No network beyond the loopback: ``--env-manager local`` installs nothing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .champion_helpers import BLUE, RED, photo, register_colour_model

START_TIMEOUT_S = 240  # a cold start is ~15 s alone, ~40 s on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, mlflow_uri: str) -> Iterator[str]:
    champion = register_colour_model(tmp_path, tracking_uri=mlflow_uri)
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        # mlflow starts `uvicorn` by name: it must be found next to this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
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
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn it starts is stopped with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, tmp_path / "serve.log")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


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
