"""A sweep's Optuna storage and study: opening it (journal file or PostgreSQL), the meta study and parent
run, worker liveness, and the reaper that redoes a dead worker's trials."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.errors import ConfigError, TrackingError
from tlbench.sweep.plan import FAIL_KIND, FAIL_REASON, STATUS, SweepPlan, plan_sweep
from tlbench.sweep.spec import SweepSpec, spec_as_dict
from tlbench.tracking import names
from tlbench.tracking.names import CANDIDATE_TAG, STUDY_TAG, SWEEP_TAG
from tlbench.tracking.runs import StudyRuns, redact_password

log = logging.getLogger(__name__)


# --- journal check ---
# Optuna appends each record as one JSON line. A crash or a full disk mid-append leaves the last line
# incomplete; Optuna skips it on reading, but the next append lands on that line and every later reader
# fails with a JSONDecodeError. So a torn tail is cut off (the file as found kept as
# ``<file>.corrupt-<time>``); a bad record before the end is not a torn write and stops the sweep.
@dataclass(frozen=True)
class JournalScan:
    size: int
    good_bytes: int  # the complete, readable records from the start
    bad_line: int | None = None  # 1-based number of the first unreadable line
    torn_tail: bool = False  # that line is the last one: only the tail is damaged

    @property
    def intact(self) -> bool:
        return self.bad_line is None


def scan_journal(path: Path) -> JournalScan:
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                readable = line.endswith(b"\n") and isinstance(json.loads(line), dict)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                readable = False
            if not readable:
                size = os.fstat(handle.fileno()).st_size
                return JournalScan(size, offset, bad_line=number, torn_tail=offset + len(line) >= size)
            offset += len(line)
    return JournalScan(offset, good_bytes=offset)


def check_journal(path: Path) -> None:
    """Cut a torn last record off ``path`` (keeping a backup); raise if a record before it is bad.
    Damage found without a lock is checked again under Optuna's journal lock (an append in progress
    in another process is not a torn one)."""
    if not path.is_file() or scan_journal(path).intact:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        scan = scan_journal(path)
        if scan.intact:
            return  # another process was appending, or has repaired it meanwhile
        if not scan.torn_tail:
            raise TrackingError(
                f"Optuna journal {path} has an unreadable record at line {scan.bad_line}, before its "
                "end, so it was not torn by a crash and cannot be repaired by cutting its tail: restore "
                f"it from a backup, or move it aside (mv {path} {path}.bad) to start the study afresh"
            )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.corrupt-{stamp}")
        for n in itertools.count(2):
            if not backup.exists():
                break
            backup = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        shutil.copy2(path, backup)
        os.truncate(path, scan.good_bytes)
    finally:
        lock.release()
    log.warning(
        "Optuna journal %s ended in an incomplete record (a crash or a full disk while writing): "
        "cut off its last %d bytes and went on from its complete records; the file as found is kept "
        "as %s",
        path,
        scan.size - scan.good_bytes,
        backup,
    )


# --- storage ---
# Default: a journal file per study (``.tlbench/optuna/<study>.journal``), append-only with a file lock
# (local processes share it safely, unlike SQLite). An RDB URL (``postgresql://…``) lets machines share.
STORAGE_ENV = "TLBENCH_SWEEP_STORAGE"  # the storage URL a spawned worker (and the dashboard) uses
DEFAULT_DIR = Path(".tlbench") / "optuna"
JOURNAL_PREFIX = "journal:"
CONNECT_TIMEOUT_S = 10  # per connection attempt to a PostgreSQL server
SCHEMA_LOCK_KEY = int.from_bytes(b"tlbench", "big")  # pg_advisory_lock key while opening a database
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_study_name(name: str) -> str:
    if not _STUDY_NAME.match(name):
        raise ConfigError(
            f"study name {name!r} must start with a letter or digit and use only letters, digits, "
            "'_', '-' and '.'"
        )
    return name


@dataclass(frozen=True)
class StorageRef:
    kind: str  # journal | rdb
    target: str  # the journal file path, or the RDB URL

    @property
    def display(self) -> str:
        return redact_password(self.target)

    @property
    def multi_machine(self) -> bool:
        return self.kind == "rdb" and not self.target.startswith("sqlite")


def resolve_storage(url: str | None, study: str) -> StorageRef:
    """Empty -> the study's journal file; ``journal:PATH`` or ``*.journal`` -> that file; else an RDB URL."""
    text = (url or "").strip()
    if not text:
        return StorageRef("journal", str(DEFAULT_DIR / f"{study}.journal"))
    if text.startswith(JOURNAL_PREFIX):
        path = text[len(JOURNAL_PREFIX) :]
        if not path:
            raise ConfigError(
                "storage 'journal:' needs a file path, e.g. journal:.tlbench/optuna/mine.journal"
            )
        return StorageRef("journal", path)
    if "://" in text:
        return StorageRef("rdb", text)
    if text.endswith((".journal", ".log")):
        return StorageRef("journal", text)
    raise ConfigError(
        f"storage {redact_password(text)!r} is neither a journal file (journal:PATH or *.journal) "
        "nor a database URL (postgresql://user@host/db)"
    )


def with_driver(url: str) -> str:
    """``postgresql://`` with an installed driver: SQLAlchemy 2.1 defaults to psycopg 3, the
    ``postgres`` extra installs psycopg2; pick whichever is there (an explicit ``+driver`` wins), and
    without either say which extra to install instead of SQLAlchemy's ``No module named 'psycopg'``."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    if find_spec("psycopg") is not None:
        return f"postgresql://{rest}"
    if find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    raise ConfigError(
        "a PostgreSQL storage needs a database driver, and none is installed: "
        "pip install 'tlbench[postgres]' (psycopg2-binary)"
    )


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: ping pooled connections (a database restart is survived), and give
    up connecting to PostgreSQL after ``CONNECT_TIMEOUT_S`` rather than libpq's default of waiting
    forever on an unreachable host (``connect_timeout`` in the URL or ``PGCONNECT_TIMEOUT`` wins)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    scheme = url.partition("://")[0].split("+")[0]
    explicit = "connect_timeout=" in url.partition("?")[2] or os.environ.get("PGCONNECT_TIMEOUT")
    if scheme in ("postgresql", "postgres") and not explicit:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def _open_rdb(url: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """RDBStorage creates its tables and stamps its schema version when it opens a database; workers
    starting together on a fresh PostgreSQL database (a SLURM array) would race at that and all but
    one fail with duplicate-key errors, so there the opening is serialised by an advisory lock."""
    if not url.startswith("postgres"):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    import sqlalchemy

    lock, unlock = (sqlalchemy.text(f"SELECT {f}(:key)") for f in ("pg_advisory_lock", "pg_advisory_unlock"))
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect() as connection:
            connection.execute(lock, {"key": SCHEMA_LOCK_KEY})
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            finally:
                connection.execute(unlock, {"key": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()  # closing the connection would release the lock anyway


def open_storage(ref: StorageRef) -> optuna.storages.BaseStorage:
    if ref.kind == "journal":
        path = Path(ref.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)  # a torn last record (crash, full disk) is cut off, with a backup
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return _open_rdb(with_driver(ref.target), engine_kwargs(ref.target))
    except Exception as exc:  # driver missing, host down, auth: one line, no password
        detail = redact_password(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
        raise TrackingError(f"Optuna storage {ref.display} is not usable: {detail}") from None


class StudyNames:
    """The Optuna studies of one user-facing study: a meta study, one per cell, the finals."""

    def __init__(self, study: str) -> None:
        self.study = study
        self.meta, self.final = f"{study}/meta", f"{study}/final"
        self.budget_check, self.pareto = f"{study}/budget_check", f"{study}/pareto"

    def cell(self, cell_key: str) -> str:
        return f"{self.study}/{cell_key}"


# --- liveness ---
# Not Optuna's heartbeat: it exists only for RDB storages inside ``study.optimize`` (and its
# RetryFailedTrialCallback would double the sweep's own retries); the sweep claims trials with ask/tell
# on any storage. Each worker records ``host:pid:start`` on its trials and a heartbeat in the meta
# study: on the same host an owner is alive iff that pid exists with that start time (pids are
# reused); on another host, iff its heartbeat is fresh.
HEARTBEAT_SECONDS = 20.0
STALE_AFTER_SECONDS = 120.0  # a worker on another host is dead after this long without a heartbeat
WORKER_ATTR = "worker"  # user attr of each trial: the worker (host:pid:start) running it
REGISTRY_PREFIX = "worker:"


def _proc_stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux); [] where unavailable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _start_token(pid: int) -> str:
    """The process start time in clock ticks since boot (field 22), '' where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def current_worker() -> str:
    """This process as its trials and the registry name it: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_token(pid)}"


def is_alive(worker: str, registry: Mapping[str, Any]) -> bool:
    """Whether ``worker`` (``host:pid:start``) may still be working; ``registry``: the meta study's user
    attrs."""
    parts = worker.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user's
        fields = _proc_stat(pid)
        if fields and fields[0] in ("Z", "X"):  # a zombie is dead
            return False
        return not start or _start_token(pid) in ("", start)
    entry = registry.get(f"{REGISTRY_PREFIX}{worker}")
    if not isinstance(entry, Mapping) or entry.get("state") != "running":
        return False
    return time.time() - float(entry.get("beat", 0.0)) < STALE_AFTER_SECONDS


@contextlib.contextmanager
def heartbeat(beat: Callable[[], None]) -> Iterator[None]:
    """A daemon thread calling ``beat()`` every ``HEARTBEAT_SECONDS`` while the block runs."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a missed beat is harmless; the next one may succeed
                beat()

    thread = threading.Thread(target=run, name="tlbench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


# --- meta ---
# The meta study (``<study>/meta``) holds what all workers share: the definition's digest (a study
# resumes only with the definition it was started with), the worker registry and heartbeats, and the
# parent run's id. The parent run is elected (workers starting together on several machines still get
# one): each candidate is a meta trial, numbered atomically by the storage; the lowest one wins.
PARENT_ATTR, DIGEST_ATTR, CANDIDATE_ATTR = "parent_run_id", "definition_digest", "candidate"
OVERRIDES_ATTR = "command_line_overrides"
ELECTION_TIMEOUT_S = 120.0
# may change between runs of a study (``source``: where the file is, not what it defines)
_RESUMABLE_CHANGES = ("description", "budget", "final_seeds", "race", "report", "export", "source")


def definition_digest(spec: SweepSpec) -> str:
    plain = {k: v for k, v in spec_as_dict(spec).items() if k not in _RESUMABLE_CHANGES}
    for key, default in (("overrides", []), ("report", False)):  # studies from before these keys resume
        if plain.get(key) == default:
            plain.pop(key)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StudyContext:
    spec: SweepSpec
    names: StudyNames
    storage_ref: StorageRef
    storage: optuna.storages.BaseStorage
    worker: str  # host:pid:start
    runs: StudyRuns
    parent_run_id: str = ""
    _studies: dict[str, optuna.Study] = field(default_factory=dict)
    _plan: SweepPlan | None = None

    def narrow(self, spec: SweepSpec) -> None:
        """Work on ``spec`` (the screen's kept backbones) from now on: its cells, its plan; the study's
        definition (digest, ``sweep.yaml``) stays the one it was opened with."""
        self.spec = spec
        self._plan = None

    @property
    def plan(self) -> SweepPlan:
        """The study's plan (each cell composed once), computed on first use in this process."""
        if self._plan is None:
            self._plan = plan_sweep(self.spec)
        return self._plan

    def study(self, name: str) -> optuna.Study:
        """Load, or create once (cached: creating writes to the storage even when it exists); every
        study maximises val/acc, the Pareto study also minimises device-hours."""
        if name not in self._studies:
            try:
                study = optuna.load_study(
                    study_name=name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
                )
            except KeyError:
                study = optuna.create_study(
                    study_name=name,
                    storage=self.storage,
                    load_if_exists=True,
                    directions=["maximize", "minimize"] if name == self.names.pareto else ["maximize"],
                    sampler=optuna.samplers.RandomSampler(),  # each claim sets its own
                )
            self._studies[name] = study
        return self._studies[name]

    @property
    def meta(self) -> optuna.Study:
        return self.study(self.names.meta)

    def registry(self) -> dict[str, Any]:
        return dict(self.meta.user_attrs)

    def alive(self, trial: FrozenTrial, registry: dict[str, Any] | None = None) -> bool:
        """Whether the worker that owns this RUNNING trial may still finish it."""
        owner = trial.user_attrs.get(WORKER_ATTR)
        if owner is None:  # claimed a moment ago, owner not written yet (or died right then)
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            return time.time() - started < STALE_AFTER_SECONDS
        return is_alive(str(owner), self.registry() if registry is None else registry)

    def beat(self, state: str = "running") -> None:
        self.meta.set_user_attr(f"{REGISTRY_PREFIX}{self.worker}", {"state": state, "beat": time.time()})

    def other_live_workers(self) -> list[str]:
        registry = self.registry()
        mine = f"{REGISTRY_PREFIX}{self.worker}"
        keys = [k for k in registry if k.startswith(REGISTRY_PREFIX) and k != mine]
        return [k for k in keys if is_alive(k.removeprefix(REGISTRY_PREFIX), registry)]


def open_study(
    spec: SweepSpec, study: str, ref: StorageRef, *, tracking_uri: str | None, params: dict[str, Any]
) -> StudyContext:
    """Open (or create) the study and its parent run; this process registers as a live worker."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = StudyContext(
        spec=spec,
        names=StudyNames(study),
        storage_ref=ref,
        storage=open_storage(ref),
        worker=current_worker(),
        runs=StudyRuns(study, tracking_uri=tracking_uri),
    )
    _check_definition(ctx)
    ctx.beat()
    ctx.runs.tag_experiment({STUDY_TAG: study, SWEEP_TAG: spec.name})
    ctx.parent_run_id = _elect_parent(ctx, params)
    ctx.meta.set_user_attr(PARENT_ATTR, ctx.parent_run_id)
    return ctx


def _check_definition(ctx: StudyContext) -> None:
    meta, digest = ctx.meta, definition_digest(ctx.spec)
    stored = meta.user_attrs.get(DIGEST_ATTR)
    overrides = " ".join(ctx.spec.overrides)
    if stored is None:
        meta.set_user_attr(DIGEST_ATTR, digest)
        meta.set_user_attr("sweep", ctx.spec.name)
        meta.set_user_attr(OVERRIDES_ATTR, overrides)
    elif stored != digest:
        before = meta.user_attrs.get(OVERRIDES_ATTR, "")
        if before != overrides:
            raise ConfigError(
                f"study '{ctx.names.study}' was started with the command-line overrides "
                f"[{redact_password(before) or 'none'}], not [{redact_password(overrides) or 'none'}]: "
                "run it again with the same ARGS / --data / CLASS_MAP, or start a new study with "
                "--study / STUDY=<new name>"
            )
        raise ConfigError(
            f"study '{ctx.names.study}' was started from a different definition of sweep "
            f"'{ctx.spec.name}' (factors, search, base, sampler or pruner changed): restore the file, or "
            f"start a new study with --study / STUDY=<new name> (only budget, final.seeds and "
            "description may change between runs of one study)"
        )


def _elect_parent(ctx: StudyContext, params: dict[str, Any]) -> str:
    meta = ctx.meta
    known = meta.user_attrs.get(PARENT_ATTR)
    if known:
        if not ctx.runs.exists(str(known)):
            raise TrackingError(
                f"the parent run {known} of study '{ctx.names.study}' is not in the MLflow store "
                f"{redact_password(ctx.runs.tracking_uri)} (deleted, or another MLFLOW_TRACKING_URI?)"
            )
        return str(known)
    existing = ctx.runs.study_runs()  # read MLflow first, then the candidates (see _check_stale)
    _check_stale(ctx, existing, meta.get_trials(deepcopy=False))
    token = uuid.uuid4().hex
    meta.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.0,
            user_attrs={CANDIDATE_ATTR: token, "worker": ctx.worker},
        )
    )
    mine = ctx.runs.create_parent(
        run_name=f"study:{ctx.names.study}",
        tags={
            names.ROLE: names.STUDY,
            STUDY_TAG: ctx.names.study,
            SWEEP_TAG: ctx.spec.name,
            names.STATUS: names.RUNNING,
            CANDIDATE_TAG: token,
        },
        params=params,
        sweep_yaml=yaml.safe_dump(spec_as_dict(ctx.spec), sort_keys=False),
    )
    meta.set_user_attr(f"{CANDIDATE_ATTR}:{token}", mine)
    winner = _wait_for_winner(ctx)
    if winner != mine:
        ctx.runs.delete(mine)
    return winner


def _wait_for_winner(ctx: StudyContext) -> str:
    deadline = time.monotonic() + ELECTION_TIMEOUT_S
    while True:
        meta = ctx.meta
        attrs = meta.user_attrs
        for trial in sorted(meta.get_trials(deepcopy=False), key=lambda t: t.number):
            token = trial.user_attrs.get(CANDIDATE_ATTR)
            if token is None:
                continue
            run_id = attrs.get(f"{CANDIDATE_ATTR}:{token}")
            if run_id:
                return str(run_id)
            if is_alive(str(trial.user_attrs.get("worker", "")), attrs):
                break  # an earlier candidate is still creating its run: wait for it
        if time.monotonic() > deadline:
            raise TrackingError(f"no parent run was elected for study '{ctx.names.study}' in time")
        time.sleep(0.5)


def _check_stale(ctx: StudyContext, existing: list[Any], meta_trials: list[FrozenTrial]) -> None:
    """Parent runs this storage does not know belong to an earlier study of the same name."""
    tokens = {t.user_attrs.get(CANDIDATE_ATTR) for t in meta_trials}
    stale = [r.run_id for r in existing if r.tags.get(CANDIDATE_TAG) not in tokens]
    if stale:
        raise ConfigError(
            f"MLflow experiment '{ctx.names.study}' already holds the parent run {stale[0]} of an earlier "
            f"study of that name, unknown to the Optuna storage {ctx.storage_ref.display} (deleted or "
            "moved?): use another study name (--study / STUDY=<name>), or delete that experiment in "
            "MLflow and run `mlflow gc`"
        )


# --- reaper ---
# Trials whose worker died are marked failed ("worker died", redone) and their runs ended: by every
# worker before it claims work and every command before it returns, so ``kill -9`` leaves nothing RUNNING.
DIED = "worker died"


def reap(ctx: StudyContext, study_names: Iterable[str]) -> int:
    """FAIL every RUNNING trial of a dead worker (and KILL its MLflow run); returns how many."""
    registry = ctx.registry()
    reaped = 0
    for name in study_names:
        study = ctx.study(name)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if ctx.alive(trial, registry):
                continue
            owner = trial.user_attrs.get(WORKER_ATTR, "unknown worker")
            trial_id = trial._trial_id  # Optuna has no public API to close another process's trial
            try:
                ctx.storage.set_trial_user_attr(trial_id, FAIL_KIND, "died")
                ctx.storage.set_trial_user_attr(trial_id, FAIL_REASON, f"{DIED} ({owner})")
                ctx.storage.set_trial_user_attr(trial_id, STATUS, f"{names.FAILED_PREFIX}{DIED}")
                ctx.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its owner (or another reaper) finished it meanwhile
            kill_trial_runs(ctx, name, trial.number)
            log.warning("%s #%d: %s; its work will be redone", name, trial.number, DIED)
            reaped += 1
    return reaped


def kill_trial_runs(ctx: StudyContext, optuna_study: str, number: int) -> None:
    """End the runs of a reaped trial: RUNNING ones, and ones that ended as a result (completed,
    pruned) whose ``tell`` never reached Optuna because the worker died in between. The trial is
    redone, so such a run must not count as a result a second time (the report reads MLflow)."""
    for run in ctx.runs.children_of_trial(optuna_study, number):
        if run.status == "RUNNING" or not run.tags.get(names.STATUS, "").startswith(
            names.FAILED_PREFIX.rstrip(": ")
        ):
            ctx.runs.set_state(run.run_id, "KILLED", tags={names.STATUS: f"{names.FAILED_PREFIX}{DIED}"})


def close_orphan_runs(ctx: StudyContext) -> int:
    """End child runs left RUNNING whose Optuna trial is no longer running (or whose worker died)."""
    closed = 0
    registry = ctx.registry()
    for run in ctx.runs.running_children():
        study_name, number = run.tags.get(names.OPTUNA_STUDY), run.tags.get(names.TRIAL_NUMBER)
        if not study_name or number is None or not number.isdigit():
            continue  # not a sweep trial's run
        try:
            trial = ctx.study(study_name).trials[int(number)]
        except (KeyError, IndexError):
            trial = None
        if trial is not None and trial.state == TrialState.RUNNING and ctx.alive(trial, registry):
            continue
        ctx.runs.set_state(run.run_id, "KILLED", tags={names.STATUS: f"{names.FAILED_PREFIX}{DIED}"})
        closed += 1
    return closed
