"""``tlbench <command>``: thin entry points. Each command lives in its own module under ``commands/``."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from tlbench.cost.threads import passive_wait_default
from tlbench.errors import TlbenchError

# command -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("tlbench.commands.train", "run one trial: tlbench train [hydra overrides ...]"),
    "config": ("tlbench.commands.config", "print the composed config: tlbench config [overrides ...]"),
    "ui": ("tlbench.commands.ui", "open MLflow's UI on 127.0.0.1"),
    "sweep": ("tlbench.commands.sweep", "run or resume a study: tlbench sweep --sweep NAME [--workers N]"),
    "dashboard": ("tlbench.commands.dashboard", "optuna-dashboard on a study, 127.0.0.1: [--study NAME]"),
    "report": ("tlbench.commands.report", "a study's report from MLflow: tlbench report [--study NAME]"),
    "bench": ("tlbench.commands.bench", "moved: `make bench` (python -m benchmarks), see docs/benchmarks.md"),
    "screen": ("tlbench.commands.screen", "rank backbones without training: tlbench screen [--data PATH]"),
    "export": (
        "tlbench.commands.export",
        "register a study's winner as an MLflow model: tlbench export --study S",
    ),
    "predict": (
        "tlbench.commands.predict",
        "classify images: tlbench predict --model models:/S@champion PATH...",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: tlbench <command> [args]\n\ncommands:\n" + "\n".join(lines)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL", "filelock", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    passive_wait_default()  # before any command imports torch (its OpenMP runtime reads it once)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"tlbench: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest))
    except TlbenchError as exc:
        print(f"tlbench {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlbench {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
