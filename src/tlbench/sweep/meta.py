"""The study as a whole: its storage, meta study, worker registry and its one MLflow parent run.

The meta study (``<study>/meta``) holds what all workers share: the sweep definition's digest (a
study is resumed only with the definition it was started with), the worker registry and
heartbeats, and the parent run's id. The parent run is elected, so that workers starting together
on several machines still end up with exactly one: each candidate is recorded as a meta trial
(trial numbers are assigned atomically by the storage) and the lowest-numbered candidate wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState, create_trial

from tlbench.errors import ConfigError, TrackingError
from tlbench.sweep.liveness import REGISTRY_PREFIX, STALE_AFTER_SECONDS, WORKER_ATTR, WorkerId, is_alive
from tlbench.sweep.loader import spec_as_dict
from tlbench.sweep.plan import SweepPlan, plan_sweep
from tlbench.sweep.spec import SweepSpec
from tlbench.sweep.storage import StorageRef, StudyNames, open_storage
from tlbench.tracking.names import STUDY_TAG, SWEEP_TAG
from tlbench.tracking.runs import CANDIDATE_TAG, StudyRuns, redact_password

log = logging.getLogger(__name__)
Direction = Literal["maximize", "minimize"]
PARETO_DIRECTIONS: tuple[Direction, Direction] = ("maximize", "minimize")  # val/acc, device-hours

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
    worker: WorkerId
    runs: StudyRuns
    parent_run_id: str = ""
    _studies: dict[str, optuna.Study] = field(default_factory=dict)
    _plan: SweepPlan | None = None

    def narrow(self, spec: SweepSpec) -> None:
        """Work on ``spec`` from now on (the screen's kept backbones): its cells, its plan.

        The study's definition (digest, ``sweep.yaml``) stays the one it was opened with.
        """
        self.spec = spec
        self._plan = None

    @property
    def plan(self) -> SweepPlan:
        """The study's plan (each cell composed once), computed on first use in this process."""
        if self._plan is None:
            self._plan = plan_sweep(self.spec)
        return self._plan

    def study(self, name: str) -> optuna.Study:
        """Load, or create once; cached, because creating writes to the storage even when it exists.

        Every study maximises val/acc, except the Pareto study, which also minimises device-hours.
        """
        if name not in self._studies:
            directions: tuple[Direction, ...] = (
                PARETO_DIRECTIONS if name == self.names.pareto else ("maximize",)
            )
            try:
                study = optuna.load_study(
                    study_name=name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
                )
            except KeyError:
                study = optuna.create_study(
                    study_name=name,
                    storage=self.storage,
                    load_if_exists=True,
                    directions=list(directions),
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
        return is_alive(WorkerId.parse(str(owner)), self.registry() if registry is None else registry)

    def beat(self, state: str = "running") -> None:
        self.meta.set_user_attr(self.worker.registry_key, {"state": state, "beat": time.time()})

    def other_live_workers(self) -> list[str]:
        registry = self.registry()
        keys = [k for k in registry if k.startswith(REGISTRY_PREFIX) and k != self.worker.registry_key]
        return [k for k in keys if is_alive(WorkerId.parse(k[len(REGISTRY_PREFIX) :]), registry)]


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
        worker=WorkerId.current(),
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
            user_attrs={CANDIDATE_ATTR: token, "worker": str(ctx.worker)},
        )
    )
    mine = ctx.runs.create_parent(
        run_name=f"study:{ctx.names.study}",
        tags={
            "role": "study",
            STUDY_TAG: ctx.names.study,
            SWEEP_TAG: ctx.spec.name,
            "status": "running",
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
            if is_alive(WorkerId.parse(str(trial.user_attrs.get("worker", ""))), attrs):
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
