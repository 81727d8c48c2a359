"""What pruning saves: a sweep's tuning phase run with its pruner and with ``pruner: none``.

Running the whole default sweep twice takes hours on a CPU, so the benchmark derives a reduced sweep
from the sweep file itself: the same base, search space, sampler (same seed, so both runs try the
same learning rates), budget per cell and pruner, on a subset of its cells, without the final phase
(finals are never pruned; they would add the same cost to both sides). It runs through the public
entry point, ``tlbench sweep --sweep FILE --study NAME --storage URL``, and reads the trials back
from the Optuna storage: each trial's ``cost/device_hours`` (pruned trials included: compute spent
is compute spent), the epochs it trained, and the best validation accuracy each cell found.
``default_sweep_pruned_over_unpruned`` (:func:`sweep_ratio`) runs the pair, repeated (alternating
which sweep goes first) while the bench's time budget allows.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.cases import Plan, SweepPlan, timed
from benchmarks.measure import Progress
from benchmarks.report import RatioResult
from benchmarks.timing import Sample, spread
from tlbench.errors import ConfigError
from tlbench.tracking.names import EVAL_FLOPS, TRAIN_FLOPS
from tlbench.training.inputs import reset_feature_cache

TUNING_EXCLUDED = ("meta", "final", "pareto")  # study suffixes that are not tuning cells
FLOP_METRICS = (TRAIN_FLOPS, EVAL_FLOPS)  # a trial's work: training (+ extraction), evaluation


def _condition_holds(condition: str, cells: Mapping[str, Sequence[Any]]) -> bool:
    """Whether a ``k=v,k2=v2`` condition can still match a cell of the reduced factors."""
    for part in condition.split(","):
        key, _, value = part.strip().partition("=")
        if key in cells and value.strip() not in {str(v) for v in cells[key]}:
            return False
    return True


def reduced_sweep(
    data: Mapping[str, Any], plan: SweepPlan, *, extra_base: Sequence[str] = (), pruned: bool = True
) -> dict[str, Any]:
    """The sweep mapping restricted to ``plan.cells``, finals and budget check dropped, maybe unpruned.

    Raises:
        ConfigError: A requested factor or value is not in the sweep file.
    """
    factors: dict[str, list[Any]] = dict(data.get("factors") or {})
    for name, values in plan.cells.items():
        if name not in factors:
            raise ConfigError(f"bench sweep: factor '{name}' is not in the sweep ({', '.join(factors)})")
        missing = [v for v in values if str(v) not in {str(f) for f in factors[name]}]
        if missing:
            raise ConfigError(f"bench sweep: {name}={missing} not among the sweep's values {factors[name]}")
        factors[name] = list(values)
    out = {k: v for k, v in data.items() if k not in ("final", "description")}
    out["description"] = "make bench: the tuning phase of a sweep on a subset of its cells"
    out["factors"] = factors
    if isinstance(data.get("budget"), Mapping) and "check" in data["budget"]:
        # the budget check re-runs tuned choices before the finals: with the finals gone, it goes too
        out["budget"] = {k: v for k, v in data["budget"].items() if k != "check"}
    for section in ("where", "search_where"):
        if data.get(section):
            kept = {c: v for c, v in data[section].items() if _condition_holds(str(c), factors)}
            out[section] = kept
            if not kept:
                del out[section]
    out["base"] = [*(plan.base if plan.base is not None else data.get("base") or []), *extra_base]
    if not pruned:
        out["pruner"] = {"name": "none"}
    return out


@dataclass(frozen=True)
class TrialCost:
    """One tuning trial as read back from the study."""

    cell: str
    state: str  # COMPLETE | PRUNED | FAIL
    device_hours: float
    epochs: int  # resource used, in the pruner's units: epochs, or 1/val_checks of a step budget
    val_acc: float | None


@dataclass(frozen=True)
class CellSummary:
    cell: str
    trials: int
    pruned: int
    device_hours: float
    epochs: int
    best_val_acc: float | None  # among completed trials, as the sweep picks its winner

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(trials: Sequence[TrialCost]) -> list[CellSummary]:
    """Per cell: trials, how many pruned, device-hours and epochs spent, best completed val/acc."""
    cells: dict[str, list[TrialCost]] = {}
    for trial in trials:
        cells.setdefault(trial.cell, []).append(trial)
    out = []
    for cell, group in sorted(cells.items()):
        done = [t.val_acc for t in group if t.state == "COMPLETE" and t.val_acc is not None]
        out.append(
            CellSummary(
                cell=cell,
                trials=len(group),
                pruned=sum(1 for t in group if t.state == "PRUNED"),
                device_hours=sum(t.device_hours for t in group),
                epochs=sum(t.epochs for t in group),
                best_val_acc=max(done) if done else None,
            )
        )
    return out


def best_case_fraction(*, epochs: int, trials: int, first_rung: int) -> float:
    """Pruned / unpruned epochs if every trial but the first stopped at the pruner's first rung.

    Successive halving never prunes a cell's first trial (it has nothing to compare with), and the
    earliest a later one can stop is after ``first_rung`` epochs: this is the most pruning can save.
    """
    if epochs < 1 or trials < 1 or first_rung < 1:
        raise ValueError(f"need positive {epochs=}, {trials=}, {first_rung=}")
    return (epochs + (trials - 1) * min(first_rung, epochs)) / (trials * epochs)


@dataclass(frozen=True)
class SweepRun:
    study: str
    pruned: bool
    sample: Sample  # the whole sweep command
    cells: list[CellSummary]
    flops: float = 0.0  # summed FLOP_METRICS its trials logged to MLflow (0: none logged)

    @property
    def device_hours(self) -> float:
        return sum(c.device_hours for c in self.cells)

    @property
    def epochs(self) -> int:
        return sum(c.epochs for c in self.cells)

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "pruner": "as in the sweep file" if self.pruned else "none",
            "wall_s": self.sample.wall_s,
            "cpu_s": self.sample.cpu_s,
            "device_hours": self.device_hours,
            "epochs": self.epochs,
            "logged_flops": self.flops,
            "cells": [c.as_dict() for c in self.cells],
        }


def _read_trials(journal: Path, study: str) -> list[TrialCost]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    out = []
    for summary in storage.get_all_studies():
        prefix, _, cell = summary.study_name.partition("/")
        if prefix != study or not cell or cell in TUNING_EXCLUDED:
            continue
        for trial in storage.get_all_trials(storage.get_study_id_from_name(summary.study_name)):
            # every trial that trained logged its cost, diverged and pruned ones too; lost claims 0
            hours = float(trial.user_attrs.get("cost_device_hours", 0.0))
            acc = trial.user_attrs.get("val_acc")
            epochs = _epochs(trial.state.name, trial.intermediate_values, trial.user_attrs.get("overrides"))
            out.append(
                TrialCost(cell, trial.state.name, hours, int(epochs), None if acc is None else float(acc))
            )
    return out


@functools.lru_cache(maxsize=64)
def _configured_units(overrides: tuple[str, ...]) -> int:
    """A whole trial in the pruner's resource: ``val_checks`` with a step budget, else its epochs."""
    from tlbench.config import load_config

    trainer = load_config(overrides).trainer
    return int(trainer.val_checks or trainer.epochs)


def _epochs(state: str, reported: Mapping[int, float], overrides: Sequence[str] | None) -> int:
    """Resource a trial used, in the pruner's units (epochs, or 1/val_checks of the step budget):
    up to its last report if pruned, else all it was configured for."""
    if state == "PRUNED" or not overrides:
        return int(max(reported, default=0))  # unpruned studies report nothing: 0 only without overrides
    return _configured_units(tuple(overrides))


def logged_flops(study: str, tracking_uri: str) -> float:
    """Summed :data:`FLOP_METRICS` of every trial run the study logged (pruned and failed ones too)."""
    from tlbench.tracking.study import find_study, read_study

    records = read_study(find_study(study, tracking_uri=tracking_uri), tracking_uri=tracking_uri)
    return sum(run.metrics.get(name, 0.0) for run in records.children for name in FLOP_METRICS)


def run_sweep(
    mapping: Mapping[str, Any], *, study: str, workdir: Path, pruned: bool, tracking_uri: str | None = None
) -> SweepRun:
    """Write the sweep file, run ``tlbench sweep`` on it in this process, read its trials back.

    With ``tracking_uri`` (the store the sweep's base logs to), also the FLOPs its trials logged.
    """
    from tlbench.commands import sweep as sweep_command

    path = workdir / "sweeps" / f"{study}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(mapping), sort_keys=False))
    journal = workdir / "optuna" / f"{study}.journal"
    argv = ["--sweep", str(path), "--study", study, "--storage", f"journal:{journal}"]
    captured = io.StringIO()  # the sweep's own progress view; the bench prints one line per sweep
    with contextlib.redirect_stdout(captured):
        code, sample = timed(lambda: sweep_command.main(argv))
    if code != 0:
        raise RuntimeError(f"bench sweep {study} exited with {code}:\n{captured.getvalue()[-2000:]}")
    cells = summarize(_read_trials(journal, study))
    flops = logged_flops(study, tracking_uri) if tracking_uri else 0.0
    return SweepRun(study=study, pruned=pruned, sample=sample, cells=cells, flops=flops)


def accuracy_gap_points(pruned: SweepRun, unpruned: SweepRun) -> float | None:
    """Largest drop, over cells, of the best val/acc found with pruning vs without (points, >= 0 better)."""
    best = {c.cell: c.best_val_acc for c in unpruned.cells if c.best_val_acc is not None}
    gaps = [
        100.0 * (best[c.cell] - c.best_val_acc)
        for c in pruned.cells
        if c.best_val_acc is not None and c.cell in best
    ]
    return max(gaps) if gaps else None


def sweep_ratio(plan: Plan, uri: str, work: Path, progress: Progress) -> RatioResult:
    """default_sweep_pruned_over_unpruned on a reduced copy of the sweep (see the module docstring)."""
    from tlbench.sweep.spec import sweep_path

    source = yaml.safe_load(sweep_path(plan.sweep.source).read_text()) or {}
    threads = [f"trainer.num_threads={plan.threads}"] if plan.threads else []
    extra = ["trainer.feature_cache_dir=null", f"tracking.tracking_uri={uri}", *threads]
    pairs: list[tuple[SweepRun, SweepRun]] = []
    for repeat in range(plan.sweep.repeats):
        if pairs:
            pair_s = pairs[-1][0].sample.wall_s + pairs[-1][1].sample.wall_s
            if progress.elapsed() + 1.1 * pair_s > plan.budget_s:
                progress.line(
                    f"sweep: no repeat {repeat + 1} (it would end past the {plan.budget_s:.0f} s budget)"
                )
                break
        done: dict[bool, SweepRun] = {}
        for pruned in (True, False) if repeat % 2 == 0 else (False, True):
            reset_feature_cache()  # each sweep extracts its own features, as a fresh sweep would
            mapping = reduced_sweep(source, plan.sweep, extra_base=extra, pruned=pruned)
            study = f"bench-{'pruned' if pruned else 'unpruned'}-{repeat}"
            result = run_sweep(mapping, study=study, workdir=work, pruned=pruned, tracking_uri=uri)
            done[pruned] = result
            trials = sum(c.trials for c in result.cells)
            pruned_n = sum(c.pruned for c in result.cells)
            progress.line(
                f"{'sweep ' + study:<36} wall {result.sample.wall_s:7.2f} s  cpu {result.sample.cpu_s:7.2f} s"
                f"  {trials} trials, {pruned_n} pruned, {result.device_hours * 3600:.1f} device-s"
            )
        pairs.append((done[True], done[False]))
    ratios = [p.device_hours / u.device_hours for p, u in pairs]
    gaps = [accuracy_gap_points(p, u) for p, u in pairs]
    pruner = dict(source.get("pruner") or {})
    first_rung = int(pruner.get("min_resource", 1))
    budget = int((source.get("budget") or {}).get("trials_per_cell", 1))
    unpruned = [c for c in pairs[0][1].cells if c.epochs > 0 and c.trials > 0]
    bounds = {
        c.cell: best_case_fraction(epochs=c.epochs // c.trials, trials=budget, first_rung=first_rung)
        for c in unpruned
    }
    unpruned_hours = {c.cell: c.device_hours for c in unpruned}
    weighted = sum(bounds[k] * h for k, h in unpruned_hours.items()) / sum(unpruned_hours.values())
    wall = spread(ratios)
    cpu = spread([p.sample.cpu_s / u.sample.cpu_s for p, u in pairs])
    # work-based cross-check, free of timing noise: each cell's epoch ratio, weighted by its cost
    weighted_epochs = [
        sum(
            (pc.epochs / uc.epochs) * uc.device_hours
            for pc, uc in zip(p.cells, u.cells, strict=True)
            if uc.epochs
        )
        / u.device_hours
        for p, u in pairs
    ]
    known_gaps = [g for g in gaps if g is not None]
    return RatioResult(
        "default_sweep_pruned_over_unpruned",
        wall.median,
        wall=wall,
        cpu=cpu,
        accuracy_ok=all(g <= 1.0 for g in known_gaps) if known_gaps else None,
        details={
            "source": plan.sweep.source,
            "cells": plan.sweep.cells,
            "pruner": pruner,
            "trials_per_cell": budget,
            "repeats": len(pairs),
            "max_repeats": plan.sweep.repeats,
            "per_repeat_ratio": ratios,
            "epochs_ratio": [p.epochs / u.epochs for p, u in pairs],
            "cost_weighted_epochs_ratio": weighted_epochs,
            "accuracy_gap_points": gaps,
            "best_case_ratio_per_cell": bounds,
            "best_case_ratio": weighted,
            "runs": [{"pruned": p.as_dict(), "unpruned": u.as_dict()} for p, u in pairs],
            "note": "cpu_ratio compares the two sweep commands' CPU time; value uses cost/device_hours",
        },
    )
