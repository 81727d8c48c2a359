"""The methods section, written from what the runs logged (not from what the config meant to do)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from tlbench.report.collect import CHANCE_SE
from tlbench.report.render import (
    Block,
    Bullets,
    Callout,
    Heading,
    Paragraph,
    Table,
    pct,
    pp,
    seconds,
    si,
    sig,
    signed_pp,
    size_label,
    sorted_sizes,
)
from tlbench.report.sections import ReportInputs
from tlbench.report.tables import (
    FINAL,
    TUNE,
    Totals,
    TuningRow,
    budget_checks,
    parse_race,
    tune_at,
    tuning_budget,
    tuning_protocol,
)
from tlbench.tracking.names import FIT_CPU_SECONDS
from tlbench.tracking.study_reader import redact_uri

_TRAINING = ("optimizer", "schedule", "epochs", "batch_size", "weight_decay", "head", "precision", "augment")


def _values(values: pd.Series, *, limit: int = 4) -> str:
    seen = sorted({str(v) for v in values.dropna() if str(v) not in {"", "<NA>"}})
    if not seen:
        return "not recorded"
    shown = ", ".join(f"`{v}`" for v in seen[:limit])
    return shown if len(seen) <= limit else f"{shown} and {len(seen) - limit} more"


def _range(counts: pd.Series) -> str:
    if counts.empty:
        return "0"
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"


def _per_cell(trials: pd.DataFrame, role: str, *, completed: bool = False) -> pd.Series:
    rows = trials[trials["role"] == role]
    if completed:
        rows = rows[rows["outcome"] == "completed"]
    return rows.groupby(["strategy", "n_per_class"]).size()


def _when(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _train_sizes(trials: pd.DataFrame) -> str:
    parts = []
    for size in sorted_sizes(trials["n_per_class"]):
        n_train = trials[trials["n_per_class"] == size]["n_train"]
        parts.append(f"{size_label(size)} → {_values(n_train)}")
    return "; ".join(parts) if parts else "not recorded"


def methods_section(inp: ReportInputs, totals: Totals) -> list[Block]:
    t = inp.trials
    lrs = pd.to_numeric(t["lr"], errors="coerce").dropna()
    lr_text = f"{lrs.min():.3g}–{lrs.max():.3g}" if len(lrs) and lrs.min() != lrs.max() else _values(t["lr"])
    training = "; ".join(f"{name} {_values(t[name])}" for name in _TRAINING)
    role_hours = ", ".join(
        f"{role or '(no role)'} {sig(h)}" for role, h in totals.device_hours_by_role.items()
    )
    bullets = (
        f"**Backbone:** {_values(t['backbone'])}, initial weights {_values(t['weights'])} "
        f"(freeze groups: {_values(t['freeze_groups'])}).",
        f"**Dataset:** {_values(t['dataset'])} at {_values(t['resolution'])} px, "
        f"{_values(t['n_classes'])} classes "
        f"(data fingerprint {_values(t['data_fingerprint'])}). Validation {_values(t['n_val'])} and test "
        f"{_values(t['n_test'])} images, the same for every data size and seed (split seed "
        f"{_values(t['split_seed'])}). Training images: {_train_sizes(t)}.",
        f"**Protocol:** per strategy × data size, {_range(_per_cell(t, TUNE))} tuning trials chose the "
        f"configuration on validation accuracy (learning rate {lr_text}); the best configuration was "
        f"re-trained with {_range(_per_cell(t, FINAL))} final seed(s) per cell "
        f"({_range(_per_cell(t, FINAL, completed=True))} completed), each evaluated once on the test set.",
        f"**Training:** {training}.",
        f"**Statistics:** means over final seeds with two-sided 95% Student-t intervals (n−1 degrees of "
        f"freedom); no interval from a single seed. Recommendation tolerance: {pp(inp.tolerance)} "
        "(absolute accuracy).",
        f"**Hardware:** device {_values(t['device'])} ({_values(t['device_model'])}), "
        f"{_values(t['device_count'])} device(s) per trial.",
        cost_rule(t),
        f"**Software:** tlbench {_values(t['tlbench_version'])}, torch {_values(t['torch_version'])}, "
        f"Python {_values(t['python_version'])}; report built with "
        + ", ".join(f"{k} `{v}`" for k, v in inp.report_software.items())
        + ".",
        f"**Total compute of the study:** {sig(totals.device_hours)} {inp.unit.unit} "
        f"({seconds(totals.fit_seconds)} of fitting; by role: {role_hours}), "
        f"{si(totals.train_flops, 'FLOPs')} of training, over {totals.runs} trials including pruned and "
        "failed ones; runs from "
        f"{_when(totals.first_start_ms)} to {_when(totals.last_end_ms)}.",
    )
    blocks: list[Block] = [Heading("Methods"), Bullets(bullets)]
    if inp.parent_params:
        blocks.append(Paragraph("Sweep settings logged on the study's parent run:"))
        blocks.append(
            Table(
                ("Parameter", "Value"),
                tuple((f"`{k}`", redact_uri(str(v))) for k, v in sorted(inp.parent_params.items())),
            )
        )
    blocks += tuning_blocks(t, inp.sweep_yaml)
    blocks += budget_blocks(t, tolerance=inp.tolerance)
    blocks += race_blocks(inp.race_json)
    blocks += [
        Heading("Collapse rule", level=3),
        Paragraph(
            "A run whose validation accuracy ends within noise of chance (an exact one-sided binomial test "
            "at 5%), or whose training loss ends above where it started and above a chance guess's "
            "(−ln of the largest class's share), is a failed configuration (tag `collapsed`): never "
            "selected by tuning, never "
            "in a summary, comparison or figure (see Failed configurations). For runs that carry no such "
            "tag, the report applies the chance part itself: validation accuracy at most 1/classes + "
            f"{CHANCE_SE:g} binomial standard errors over the validation images."
        ),
    ]
    return blocks


_OLD_RULE = (
    "fit wall-clock seconds × devices / 3600 (runs without a `device_hours_rule` tag, from before tlbench "
    "logged it)"
)


def cost_rule(t: pd.DataFrame) -> str:
    """The device-hours rule as the runs logged it, and wall-clock time kept apart."""
    rules = sorted({str(v) for v in t["device_hours_rule"].dropna() if str(v) not in {"", "<NA>"}})
    untagged = int((t["device_hours_rule"].isna() | (t["device_hours_rule"].astype(str) == "")).sum())
    said = "; ".join(f"`{r}`" for r in rules)
    if rules and untagged:
        said += f"; {untagged} run(s): {_OLD_RULE}"
    elif not rules:
        said = _OLD_RULE
    cpu = t[FIT_CPU_SECONDS] if FIT_CPU_SECONDS in t else pd.Series(dtype=float)
    cpu_text = f", {seconds(float(cpu.dropna().sum()))} of fit CPU time" if cpu.notna().any() else ""
    return (
        "**Cost:** device-hours are each run's own compute, so they read the same alone and on a loaded "
        "machine: on a CPU the fit's process CPU seconds ÷ the threads it used, on a GPU wall seconds × "
        f"devices (÷ 3600). As logged: {said}. Wall-clock time is reported apart (`cost/fit_seconds`: "
        f"{seconds(float(t['cost/fit_seconds'].dropna().sum()))} of fitting in all{cpu_text}); it moves with "
        "whatever else ran on the machine."
    )


def tuning_blocks(t: pd.DataFrame, sweep_yaml: str | None) -> list[Block]:
    """Per arm: its tuning trials and the ranges it searched (every arm should be tuned alike)."""
    rows = tuning_protocol(t, sweep_yaml)
    if not rows:
        return []
    budget = tuning_budget(sweep_yaml)
    # Arms with nothing to search (as_is) are not tuned by design; with budget.tune_at, one size is
    # tuned and the others run its choice: neither is a smaller tuning budget.
    carried_from = {r.strategy: r.n_per_class for r in rows if r.trials} if tune_at(sweep_yaml) else {}
    compared = [r for r in rows if r.searched != () and not (r.trials == 0 and r.strategy in carried_from)]
    tuned = [r for r in compared if r.trials]
    counts = {r.trials for r in tuned}
    if not tuned:
        verdict = (
            "No arm was tuned (`budget.trials_per_cell: 0`): every arm ran its strategy's documented "
            "defaults."
            if budget == 0
            else "No tuning trial is recorded: every arm ran its configured settings."
        )
    elif len(counts) == 1 and len(tuned) == len(compared):
        verdict = f"Every arm with something to tune had the same tuning budget: {counts.pop()} trials."
    else:
        low, high = min(r.trials for r in compared), max(r.trials for r in compared)
        verdict = (
            f"Tuning budgets differ between arms ({low}–{high} trials): compare the arms with that in mind."
            + (f" The sweep asked for {budget} per arm." if budget else "")
        )
    if carried_from:
        verdict += (
            f" Tuned at one data size (`budget.tune_at: {tune_at(sweep_yaml)}`); the other sizes ran that "
            "choice."
        )

    def trials_text(r: TuningRow) -> str:
        if r.trials:
            return f"{r.trials} ({_outcomes(r.counts)})"
        if r.strategy in carried_from and r.searched != ():
            return f"0 (the choice at {size_label(carried_from[r.strategy])})"
        return "0"

    def searched(r: TuningRow) -> str:
        if r.searched is None:
            return "sweep definition not recorded"
        return "; ".join(r.searched) if r.searched else "no `search` in the sweep definition"

    return [
        Heading("Tuning protocol", level=3),
        Paragraph(verdict + " Tuning chose on validation accuracy; the searched ranges are the sweep's."),
        Table(
            ("Data", "Arm", "Tuning trials", "Searched"),
            tuple(
                (
                    size_label(r.n_per_class),
                    r.strategy,
                    trials_text(r),
                    searched(r),
                )
                for r in rows
            ),
            align=("l", "l", "r", "l"),
        ),
    ]


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def budget_blocks(t: pd.DataFrame, *, tolerance: float) -> list[Block]:
    """ "Trained enough": what doubling the step budget did to validation accuracy, from budget checks."""
    checks = budget_checks(t)
    heading = Heading("Trained enough?", level=3)
    if not checks:
        return [
            heading,
            Paragraph(
                "This study ran no budget check (`role=budget_check`): whether each arm's step budget was "
                "enough is not shown."
            ),
        ]
    done = [c for c in checks if c.change is not None]
    more = [c for c in done if abs(c.change or 0.0) > tolerance]
    if done and not more:
        largest = max(abs(c.change or 0.0) for c in done)
        verdict = (
            f"Doubling the step budget changed validation accuracy by at most {pp(largest)} over "
            f"{len(done)} arm(s): the budgets were enough."
        )
    elif done:
        names = "; ".join(
            f"{c.strategy} at {size_label(c.n_per_class)} ({signed_pp(c.change)})" for c in more
        )
        verdict = (
            f"Doubling the step budget changed validation accuracy by more than {pp(tolerance)} for "
            f"{len(more)} of {len(done)} arm(s): {names}. Those arms may be under-trained (a rise) or "
            "over-fitting with more steps (a fall); their results are less settled than the others'."
        )
    else:
        verdict = "No budget check completed: whether the budgets were enough is not shown."
    failed = [c for c in checks if c.change is None]
    if failed:
        verdict += f" {len(failed)} check(s) did not complete (listed)."
    rows = tuple(
        (
            size_label(c.n_per_class),
            c.strategy,
            f"×{c.factor}",
            pct(c.base_val),
            pct(c.val) if c.val is not None else c.reason.removeprefix("failed: ") or c.outcome,
            signed_pp(c.change) if c.change is not None else "—",
        )
        for c in checks
    )
    return [
        heading,
        Paragraph(verdict),
        Table(
            ("Data", "Arm", "Budget", "Validation acc.", "With the larger budget", "Change"),
            rows,
            align=("l", "l", "r", "r", "r", "r"),
            caption="Budget checks: a tuned configuration re-run with a multiple of its step budget; "
            "validation accuracy only (test data never decides).",
        ),
    ]


def race_blocks(race_json: str | None) -> list[Block]:
    """The racing rule and the race table (arm, seeds run, round retired, why) from ``race.json``."""
    heading = Heading("Final seeds: the race", level=3)
    try:
        race = parse_race(race_json)
    except ValueError as exc:
        return [heading, Callout(f"{exc}: the race is not shown.", "warning")]
    if race is None:
        return []
    cap = f"at most {race.cap} seeds per arm" if race.cap is not None else "no seed cap recorded"
    rounds = f"{race.rounds} round(s)" if race.rounds is not None else "rounds not recorded"
    rule = race.rule or "not recorded"
    rows = tuple(
        (
            size_label(a.n_per_class),
            a.label,
            f"{len(a.seeds)} ({', '.join(map(str, a.seeds))})" if a.seeds else "0",
            "—" if a.retired_round is None else str(a.retired_round),
            a.reason or "—",
        )
        for a in race.arms
    )
    return [
        heading,
        Paragraph(
            f"Final seeds ran in rounds, paired across the arms of a data size ({cap}, {rounds}). "
            f"Rule: {rule}. Decisions read validation accuracy only; a retired arm's test results are still "
            "reported, over the seeds it got, so arms have different numbers of seeds: each arm's mean and "
            "interval use its own seeds, and paired comparisons pair only seeds both arms have."
        ),
        Table(
            ("Data", "Arm", "Seeds run", "Retired in round", "Why"),
            rows,
            align=("l", "l", "r", "r", "l"),
            caption="From race.json on the study's parent run.",
        ),
    ]
