"""``tlbench dashboard [--study NAME] [--storage URL] [--port N] [--live]``: optuna-dashboard on a study.

A sweep tunes each cell in its own Optuna study (the sampler and pruner compare a trial only with its
cell's), so the storage alone shows a dozen ``<study>/<cell>`` studies and no view of the sweep. By
default the dashboard opens a snapshot (``.tlbench/dashboard/<study>.journal``) that adds
``<study> (all cells)``: every finished tuning trial, the cell's factors as categorical parameters, so
the slice, parallel-coordinate and importance plots show the whole sweep; ``--live`` opens the study's
own storage. The workers' bookkeeping (``<study>/meta``) is left out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tlbench.errors import ConfigError
from tlbench.sweep.study import (
    DEFAULT_DIR,
    STORAGE_ENV,
    StorageRef,
    check_study_name,
    open_storage,
    resolve_storage,
    with_driver,
)
from tlbench.tracking.names import VAL_ACC

SNAPSHOT_DIR = Path(".tlbench") / "dashboard"
ALL_CELLS = "(all cells)"
_BOOKKEEPING = ("meta",)  # per-study Optuna studies that hold no trials of the benchmark
_WHAT = {"final": "finals", "pareto": "pareto"}  # a study's suffix -> what it is (else: a cell)
LEGEND = (
    "whole sweep: every cell's tuning trials in one study, the cell's factors as parameters (its slice, "
    "parallel-coordinate and importance plots compare the cells); cell: one cell's tuning trials, "
    "what the sampler and pruner saw; finals: the chosen configurations on the final seeds "
    "(test/acc among their user attributes)"
)


@dataclass(frozen=True)
class StudyLine:
    """One Optuna study as the dashboard lists it, what it is, and its trials in words."""

    name: str
    what: str
    summary: str  # "4 trials (1 pruned, 1 failed); best val/acc 0.753 (strategy=linear_probe, ...)"

    @classmethod
    def of(cls, name: str, what: str, trials: Sequence[Any], *, keys: Sequence[str] = ()) -> StudyLine:
        """The line of a study with these trials; ``keys``: the parameters its best trial shows."""
        from optuna.trial import TrialState

        states = Counter(t.state for t in trials)
        running = states[TrialState.RUNNING] + states[TrialState.WAITING]
        counts = {"pruned": states[TrialState.PRUNED], "failed": states[TrialState.FAIL], "running": running}
        notes = [f"{n} {state}" for state, n in counts.items() if n]
        summary = f"{len(trials)} trials" + (f" ({', '.join(notes)})" if notes else "")
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values and len(t.values) == 1]
        if done:
            top = max(done, key=lambda t: t.values[0])
            where = ", ".join(f"{k}={top.params[k]}" for k in keys if k in top.params)
            summary += f"; best {VAL_ACC} {top.values[0]:.3f}" + (f" ({where})" if where else "")
        return cls(name, what, summary)

    def render(self, width: int) -> str:
        return f"  {self.name:<{width}}  {self.what:<11}  {self.summary}"


def _latest_study() -> str:
    journals = sorted(DEFAULT_DIR.glob("*.journal"), key=lambda p: p.stat().st_mtime)
    if not journals:
        raise ConfigError(f"no study in {DEFAULT_DIR}/: run `make sweep` first, or give STUDY= / STORAGE=")
    return journals[-1].stem


def cell_factors(cell_key: str) -> dict[str, Any]:
    """``data.n_per_class=10,strategy=scratch`` -> ``{"data.n_per_class": 10, "strategy": "scratch"}``."""
    if cell_key == "base":  # the one cell of a sweep without factors
        return {}
    factors: dict[str, Any] = {}
    for part in cell_key.split(","):
        key, sep, text = part.partition("=")
        if not sep:
            raise ValueError(f"not a cell key: {cell_key!r}")
        value = yaml.safe_load(text) if text else ""
        factors[key] = value if isinstance(value, bool | int | float | str) or value is None else text
    return factors


def _study_names(storage: Any, study: str) -> dict[str, Any]:
    """Optuna study name -> frozen study, for the studies of user study ``study``."""
    prefix = f"{study}/"
    return {s.study_name: s for s in storage.get_all_studies() if s.study_name.startswith(prefix)}


def _merged_trials(cells: dict[str, list[Any]]) -> list[Any]:
    """Every finished trial of every cell, with the cell's factors as categorical parameters."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    factors = {cell: cell_factors(cell) for cell in cells}
    keys = dict.fromkeys(key for values in factors.values() for key in values)  # in order of appearance
    choices = {key: list(dict.fromkeys(v[key] for v in factors.values() if key in v)) for key in keys}
    merged = []
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for cell, trials in cells.items():
        extra = {k: CategoricalDistribution(choices[k]) for k in factors[cell]}
        for t in trials:
            if t.state not in finished:
                continue
            merged.append(
                create_trial(
                    state=t.state,
                    values=t.values if t.state != TrialState.FAIL else None,
                    params={**factors[cell], **t.params},
                    distributions={**extra, **t.distributions},
                    user_attrs={**t.user_attrs, "cell": cell, "cell_trial": t.number},
                    intermediate_values=dict(t.intermediate_values),
                )
            )
    return merged


def write_snapshot(source: Any, study: str, target: Path) -> list[StudyLine]:
    """Write the whole-sweep view of ``study`` (in Optuna storage ``source``) to journal ``target``; its
    studies, the combined one first. A :class:`ConfigError` when the storage holds no such study."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    names = _study_names(source, study)
    if not names:
        raise ConfigError(f"no study '{study}' in this Optuna storage: run `make sweep STUDY={study}` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # a journal is append-only: a fresh file per snapshot
    sink = optuna.storages.JournalStorage(JournalFileBackend(str(target)))
    trials = {
        name: source.get_all_trials(source.get_study_id_from_name(name), deepcopy=False) for name in names
    }
    suffix = {name: name[len(study) + 1 :] for name in names}
    cells = {suffix[n]: trials[n] for n in names if suffix[n] not in (*_WHAT, *_BOOKKEEPING)}
    lines: list[StudyLine] = []
    single = {tuple(d.name for d in names[f"{study}/{c}"].directions) for c in cells}
    if cells and len(single) == 1 and len(next(iter(single))) == 1:
        merged = _merged_trials(cells)
        combined = f"{study} {ALL_CELLS}"
        directions = [d.name.lower() for d in next(iter(names.values())).directions]
        view = optuna.create_study(storage=sink, study_name=combined, directions=directions)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there in 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            view.set_metric_names([VAL_ACC])  # what every tuning trial reports, named in the plots
        view.add_trials(merged)
        keys = list(cell_factors(next(iter(cells))))
        lines.append(StudyLine.of(combined, "whole sweep", merged, keys=keys))
    for name in sorted(names, key=lambda n: (suffix[n] not in _WHAT, n)):
        if suffix[name] not in _BOOKKEEPING:
            optuna.copy_study(from_study_name=name, from_storage=source, to_storage=sink, to_study_name=name)
            lines.append(StudyLine.of(name, _WHAT.get(suffix[name], "cell"), trials[name]))
    return lines


def live_lines(source: Any, study: str) -> list[StudyLine]:
    """The study's own Optuna studies (``--live``), with what each is."""
    lines = []
    for name in sorted(_study_names(source, study)):
        suffix = name[len(study) + 1 :]
        if suffix not in _BOOKKEEPING:
            trials = source.get_all_trials(source.get_study_id_from_name(name), deepcopy=False)
            lines.append(StudyLine.of(name, _WHAT.get(suffix, "cell"), trials))
    return lines


def _rdb_study(storage: Any) -> str:
    """The one user study in a shared database, else a one-line error listing them."""
    studies = sorted(
        {s.study_name.split("/", 1)[0] for s in storage.get_all_studies() if "/" in s.study_name}
    )
    if len(studies) == 1:
        return studies[0]
    raise ConfigError(
        f"this storage holds {len(studies)} studies ({', '.join(studies) or 'none'}): choose one with STUDY="
    )


def _executable() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("optuna-dashboard", path=here) or shutil.which("optuna-dashboard")
    if found is None:
        raise ConfigError("optuna-dashboard is not installed: run `make setup`")
    return found


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tlbench dashboard",
        description="optuna-dashboard on 127.0.0.1 for a study. By default it opens a snapshot with a "
        "whole-sweep view (every cell's tuning trials in one Optuna study, the cells' factors as "
        "parameters) next to a copy of each cell's study and of the finals, and prints what each study "
        "is; run it again to refresh. --live opens the study's own storage instead (one study per cell).",
    )
    parser.add_argument("--study", default=None, help="study name (default: the most recently run one)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: the study's journal)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="open the study's own storage (one Optuna study per cell, updated as trials end) instead "
        "of a snapshot with the whole-sweep view",
    )
    args = parser.parse_args(argv)
    storage_url = args.storage or os.environ.get(STORAGE_ENV)
    study = check_study_name(args.study) if args.study else ("" if storage_url else _latest_study())
    ref = resolve_storage(storage_url, study)
    if ref.kind == "journal" and not Path(ref.target).is_file():
        raise ConfigError(f"no journal file {ref.target}: run `make sweep` for study '{study}' first")
    executable = _executable()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = open_storage(ref)
    study = study or _rdb_study(source)
    live = args.live
    if not live and ref.kind == "journal" and not _study_names(source, study):
        # the study's journal exists but holds nothing yet (a sweep starting): nothing to combine
        print(
            f"study '{study}' has no cells yet: opening its journal live (run again for the whole-sweep view)"
        )
        live = True
    if live:
        lines, shown = live_lines(source, study), ref
        header = f"study '{study}', live from {ref.display} (one Optuna study per cell)"
    else:
        target = SNAPSHOT_DIR / f"{study}.journal"
        lines, shown = write_snapshot(source, study, target), StorageRef("journal", str(target))
        header = (
            f"study '{study}': a snapshot of {ref.display} taken {time.strftime('%H:%M:%S')} in {target} "
            "(run again to refresh; --live follows the running sweep, one study per cell)"
        )
    width = max((len(line.name) for line in lines), default=0)
    print(
        f"optuna-dashboard on {header}:",
        *(line.render(width) for line in lines),
        *textwrap.wrap(LEGEND, 100),
        sep="\n",
    )
    print(f"http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    url = shown.target if shown.kind == "journal" else with_driver(shown.target)  # psycopg2, not psycopg 3
    command = [executable, url, "--host", "127.0.0.1", "--port", str(args.port)]
    journal = ["--storage-class", "JournalFileStorage"] if shown.kind == "journal" else []
    os.execv(executable, command + journal)  # argument list, no shell
    return 0  # pragma: no cover
