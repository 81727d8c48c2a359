"""An MLflow process (``mlflow server`` or ``mlflow models serve``) on 127.0.0.1 for the length of a test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

START_TIMEOUT_S = 240  # a cold start is 10-15 s alone, 40-50 s on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mlflow_env(**extra: str) -> dict[str, str]:
    """This environment, with ``uvicorn`` (which mlflow starts by name) found next to this interpreter."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running(
    command: Sequence[str], *, ready: str, log_path: Path, env: dict[str, str], cwd: Path | None = None
) -> Iterator[None]:
    """Run ``command`` in its own process group (the uvicorn it starts is stopped with it) until the
    block ends; fail the test with the log's tail if ``ready`` does not answer 200 in time."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not answers(ready):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{' '.join(command[1:5])} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
