"""``python -m benchmarks.gpu`` (``make gpu-check``): the GPU figures, measured and written to the docs.

On a machine with a CUDA GPU, within ``--budget-min`` (10 by default), in this order:

1. **the bench** (``make bench``, every step, on the GPU: torch's default threads, bf16 autocast where
   supported), its table kept as printed;
2. **a 4-workers-per-GPU scaling check**: the same 8 identical trials (full fine-tune, digits,
   5 images per class, upscaled to 224 px, 100 steps of 32 images: GPU-sized work) run as a study by
   1 worker, then by 4 workers sharing the GPU; trials per minute of each, their ratio, and the GPU's
   utilisation and memory (sampled with ``nvidia-smi``);
3. **the photo study** (``make sweep DATA=<hymenoptera>``, ``sweeps/photos.yaml``) in the time left:
   trials done, its wall time, summed GPU-hours; stopped cleanly (as Ctrl-C does) if the budget runs out.

The figures replace the marked section of ``docs/benchmarks.md`` (``--docs``) and go to
``reports/gpu_check.json``. Without a GPU it stops at once with one line (exit 2), before anything runs.
Every sweep runs in its own temporary directory (journal, MLflow store), so nothing lands in the
repository but the docs section and the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlbench.tracking.names import DEVICE_HOURS, FIT_SECONDS, ROLE, STUDY
from tlbench.training.threads import passive_wait_default

START_MARK = "<!-- gpu-check:start (written by python -m benchmarks.gpu; edits inside are replaced) -->"
END_MARK = "<!-- gpu-check:end -->"
SCALING_WORKERS = (1, 4)
SCALING_SWEEP: dict[str, Any] = {
    "description": "GPU scaling check: 8 identical full fine-tune trials (digits n=5/class at 224 px)",
    "base": [
        "data=digits",
        "data.n_per_class=5",
        "data.resolution=224",
        "data.max_val_per_class=20",
        "trainer.batch_size=32",
        "trainer.epochs=1",
        "trainer.min_steps=100",
        "trainer.val_checks=5",
        "schedule=warmup_cosine",
    ],
    "factors": {"strategy": ["full_finetune"]},
    "budget": {"trials_per_cell": 0},
    "final": {"seeds": [1, 2, 3, 4, 5, 6, 7, 8]},
    "report": False,
}


def scaling_sweep() -> dict[str, Any]:
    """:data:`SCALING_SWEEP`, with ``export: false`` where the sweep format has that key (a study that
    ends exports its winner by default: a retraining that is not part of the scaling figure)."""
    from tlbench.sweep.spec import SweepFile

    known = {f.name for f in dataclasses.fields(SweepFile)}
    return {**SCALING_SWEEP, **({"export": False} if "export" in known else {})}


TITLES = {"bench": "make bench", "scaling": "4-workers-per-GPU scaling check", "photos": "photo study"}


class NoGpu(Exception):
    """This machine has no CUDA GPU torch can use."""


@dataclass
class Step:
    """One part of the check: what ran, whether it finished, its figures."""

    name: str
    status: str = "not run"  # done | stopped at the budget | skipped: <why> | failed: <why>
    wall_s: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    output: str = ""  # what the step printed last (the bench's table, the sweep's cell table)


# ---- the docs section (pure) -------------------------------------------------------------------------


def replace_section(document: str, body: str) -> str:
    """``document`` with the text between the GPU-check marks replaced by ``body`` (appended, marks
    included, when the marks are absent). Text outside the marks is kept byte for byte.

    Raises:
        ValueError: Only one of the marks is present, or they are out of order.
    """
    start, end = document.find(START_MARK), document.find(END_MARK)
    section = f"{START_MARK}\n{body.rstrip()}\n{END_MARK}"
    if start == -1 and end == -1:
        return document.rstrip("\n") + "\n\n" + section + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError("docs: the GPU-check marks are damaged (one missing or out of order); restore both")
    return document[:start] + section + document[end + len(END_MARK) :]


def render(steps: Sequence[Step], machine: Mapping[str, Any]) -> str:
    """The docs section: machine, then each step's status and figures, then what it printed."""
    m = {
        key: machine.get(key, "?")
        for key in ("date", "gpu", "commit", "torch", "cuda", "cpu_cores", "budget_min")
    }
    lines = [
        f"### GPU check of {m['date']} ({m['gpu']})",
        "",
        f"`python -m benchmarks.gpu` at commit `{m['commit']}`: torch {m['torch']}, CUDA {m['cuda']}, "
        f"{m['cpu_cores']} CPU cores, budget {m['budget_min']} min, "
        f"whole check {_seconds(machine.get('wall_s'))}.",
        "",
    ]
    for step in steps:
        lines.append(
            f"**{step.name}**: {step.status}" + (f", {_seconds(step.wall_s)}" if step.wall_s else "") + "."
        )
        for key, value in step.figures.items():
            lines.append(f"* {key}: {_value(value)}")
        if step.output.strip():
            lines += ["", "```", step.output.rstrip(), "```"]
        lines.append("")
    return "\n".join(lines)


def _seconds(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"{value:.0f} s ({value / 60:.1f} min)"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)


def write_docs(path: Path, steps: Sequence[Step], machine: Mapping[str, Any]) -> None:
    path.write_text(replace_section(path.read_text() if path.exists() else "", render(steps, machine)))


# ---- measuring --------------------------------------------------------------------------------------


def require_gpu() -> str:
    """The GPU's name. Raises :class:`NoGpu` when torch sees none (checked before anything runs)."""
    import torch

    if not torch.cuda.is_available():
        raise NoGpu("no CUDA GPU here (torch.cuda.is_available() is False): run it on a machine with one")
    return str(torch.cuda.get_device_name(0))


@contextmanager
def gpu_sampler(period_s: float = 1.0) -> Iterator[dict[str, list[float]]]:
    """``nvidia-smi`` utilisation (%) and memory used (MiB) every ``period_s`` while the block runs."""
    samples: dict[str, list[float]] = {"utilisation_pct": [], "memory_mib": []}
    smi = shutil.which("nvidia-smi")
    stop = threading.Event()

    def poll() -> None:
        query = [
            smi or "",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ]
        while not stop.wait(period_s):
            try:
                text = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                used, memory = (float(v) for v in text.strip().split(",")[:2])
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
            samples["utilisation_pct"].append(used)
            samples["memory_mib"].append(memory)

    thread = threading.Thread(target=poll, daemon=True) if smi else None
    if thread:
        thread.start()
    try:
        yield samples
    finally:
        stop.set()
        if thread:
            thread.join(timeout=10)


def _summary(values: Sequence[float]) -> dict[str, float] | str:
    if not values:
        return "not sampled (no nvidia-smi)"
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "max": ordered[-1], "samples": len(ordered)}


def run_study(args: Sequence[str], *, work: Path, timeout_s: float) -> tuple[int | None, float, str]:
    """``tlbench sweep ARGS`` in ``work`` (its own journal and MLflow store); stopped with SIGINT (the
    sweep's clean stop) at ``timeout_s``. Returns (exit code or None if stopped, wall seconds, last lines)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    command = [sys.executable, "-m", "tlbench.cli", "sweep", *args]
    started = time.perf_counter()
    with open(work / "sweep.log", "w") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code: int | None = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            code = None
    wall = time.perf_counter() - started
    tail = (work / "sweep.log").read_text(errors="replace").splitlines()[-25:]
    return code, wall, "\n".join(line for line in tail if not line.startswith("[study "))


def finished_runs(work: Path, study: str) -> dict[str, Any]:
    """Trial runs of ``study`` that finished in ``work``'s MLflow store: count and summed cost."""
    from mlflow.tracking import MlflowClient

    try:  # a study stopped while it was still creating its store leaves nothing readable
        client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(study)
        runs = (
            client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=5000)
            if experiment is not None
            else []
        )
    except Exception as exc:
        return {"finished_trials": 0, "store": f"unreadable: {type(exc).__name__}"}
    trials = [r for r in runs if r.data.tags.get(ROLE) != STUDY]
    total = {key: sum(r.data.metrics.get(key, 0.0) for r in trials) for key in (DEVICE_HOURS, FIT_SECONDS)}
    return {
        "finished_trials": len(trials),
        "gpu_hours": total[DEVICE_HOURS],
        "fit_seconds": total[FIT_SECONDS],
    }


def scaling_step(deadline: float) -> Step:
    """The same 8 trials with 1 worker, then 4 workers; trials per minute of each."""
    step = Step(TITLES["scaling"])
    rates: dict[int, float] = {}
    started = time.perf_counter()
    for i, workers in enumerate(SCALING_WORKERS):
        with tempfile.TemporaryDirectory(prefix="tlbench-gpu-") as tmp:
            work = Path(tmp)
            (work / "scaling.yaml").write_text(yaml.safe_dump(scaling_sweep()))
            share = (deadline - time.perf_counter()) / (len(SCALING_WORKERS) - i)
            with gpu_sampler() as gpu:
                code, wall, tail = run_study(
                    ["--sweep", "scaling.yaml", "--study", "scaling", "--workers", str(workers)],
                    work=work,
                    timeout_s=share,
                )
            done = finished_runs(work, "scaling")
            rates[workers] = 60.0 * done["finished_trials"] / wall if wall else 0.0
            state = (
                "complete" if code == 0 else ("stopped at its time share" if code is None else f"exit {code}")
            )
            step.figures[f"{workers} worker(s)"] = (
                f"{done['finished_trials']}/8 trials in {wall:.1f} s ({state}): "
                f"{rates[workers]:.2f} trials/min, {done.get('gpu_hours', 0.0) * 3600:.1f} GPU-s summed"
            )
            step.figures[f"{workers} worker(s) GPU utilisation %"] = _summary(gpu["utilisation_pct"])
            step.figures[f"{workers} worker(s) GPU memory MiB"] = _summary(gpu["memory_mib"])
            if code not in (0, None):
                step.output += f"--- {workers} worker(s)\n{tail}\n"
    if rates.get(1):
        step.figures["throughput 4 workers / 1 worker"] = rates.get(4, 0.0) / rates[1]
    step.status, step.wall_s = "done", time.perf_counter() - started
    return step


def photo_step(photos: Path, deadline: float) -> Step:
    """The photo protocol on ``photos`` until it ends or the budget does."""
    step = Step(f"{TITLES['photos']} (sweeps/photos.yaml on {photos})")
    if not photos.is_dir():
        step.status = f"skipped: no photos at {photos} (pass --photos FOLDER or set TLBENCH_DATASETS)"
        return step
    with tempfile.TemporaryDirectory(prefix="tlbench-gpu-") as tmp:
        work = Path(tmp)
        with gpu_sampler() as gpu:
            code, wall, tail = run_study(
                ["--data", str(photos.resolve()), "--study", "photos"],
                work=work,
                timeout_s=deadline - time.perf_counter(),
            )
        step.figures.update(finished_runs(work, "photos"))
        step.figures["GPU utilisation %"] = _summary(gpu["utilisation_pct"])
    step.wall_s, step.output = wall, tail
    step.status = (
        "complete" if code == 0 else ("stopped at the budget" if code is None else f"failed: exit {code}")
    )
    return step


def bench_step(budget_s: float, out: Path) -> Step:
    """``make bench`` in this process; its sweep pairs repeat only within ``budget_s``."""
    from benchmarks.cases import Plan
    from benchmarks.measure import auto_threads
    from benchmarks.report import RATIOS, RatioResult, table
    from benchmarks.run import run_bench

    step = Step(TITLES["bench"])
    started = time.perf_counter()
    data = run_bench(Plan(budget_s=budget_s, threads=auto_threads(None)), out=out, emit=lambda _: None)
    step.wall_s = time.perf_counter() - started
    results = [RatioResult(name, data["ratios"][name]) for name in RATIOS]
    step.figures = {name: data["ratios"][name] for name in RATIOS}
    step.output = table(results).split("\n\nnotes:")[0]
    step.status = "done"
    return step


def _machine(gpu: str, budget_min: float) -> dict[str, Any]:
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "commit": commit or "?",
        "budget_min": budget_min,
    }


def _default_photos() -> Path:
    return Path(os.environ.get("TLBENCH_DATASETS", "datasets")) / "hymenoptera"


def main(argv: Sequence[str] | None = None, *, gpu_check: Callable[[], str] = require_gpu) -> int:
    passive_wait_default()  # before torch is imported
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=10.0, help="the whole check's time budget")
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="the hymenoptera folder (default $TLBENCH_DATASETS/hymenoptera)",
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("docs/benchmarks.md"), help="the docs file to write"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/gpu_check.json"))
    parser.add_argument("--skip", nargs="+", default=[], choices=("bench", "scaling", "photos"))
    args = parser.parse_args(argv)
    try:
        gpu = gpu_check()
    except NoGpu as exc:
        print(f"python -m benchmarks.gpu: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    deadline = started + args.budget_min * 60.0 - 15.0  # docs and JSON after the last step
    machine = _machine(gpu, args.budget_min)
    steps: list[Step] = []
    plan = {"bench": 0.45, "scaling": 0.25}  # shares of the budget; the photo study gets the rest
    out = args.out.resolve()
    for name in ("bench", "scaling", "photos"):
        if name in args.skip:
            steps.append(Step(TITLES[name], status="skipped: --skip"))
            continue
        left = deadline - time.perf_counter()
        print(f"gpu check: {name} ({left:.0f} s of the budget left)", flush=True)
        try:
            if name == "bench":
                steps.append(bench_step(plan["bench"] * args.budget_min * 60.0, out.with_name("bench.json")))
            elif name == "scaling":
                share = time.perf_counter() + plan["scaling"] * args.budget_min * 60.0
                steps.append(scaling_step(min(share, deadline)))
            else:
                steps.append(photo_step(args.photos or _default_photos(), deadline))
        except Exception as exc:  # one step's failure is a figure too: the others still run
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            steps.append(Step(TITLES[name], status=f"failed: {type(exc).__name__}: {first}"))
    machine["wall_s"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": machine, "steps": [asdict(s) for s in steps]}, indent=2, default=str) + "\n"
    )
    write_docs(args.docs, steps, machine)
    print(render(steps, machine))
    print(f"wrote {args.docs} (section between the gpu-check marks) and {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
