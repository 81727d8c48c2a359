"""``tlbench ui``: MLflow's UI for the configured tracking store, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tlbench.tracking import resolve_tracking_uri
from tlbench.tracking.runs import redact_password


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="tlbench ui")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(None)
    shown = redact_password(uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"MLflow's UI is served by the tracking server: open {shown}")
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(args.port)]
    # the store's URI (it may hold a password) goes through the environment, not the command line `ps` shows
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    print(f"MLflow UI for {shown} on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    os.execve(sys.executable, command, env)  # argument list, no shell: nothing from config reaches a shell
    return 0  # pragma: no cover
