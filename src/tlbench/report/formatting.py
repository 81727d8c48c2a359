"""How numbers and names read in a report: one place, so tables, text and figures agree."""

from __future__ import annotations

import math

from tlbench.strategies import STRATEGIES

STRATEGY_ORDER = tuple(STRATEGIES)  # the registry's order
_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def size_key(n_per_class: str) -> float:
    """Sort key of a data size label: numbers ascending, then ``all``, then anything unparsable."""
    if n_per_class == "all":
        return math.inf
    try:
        return float(n_per_class)
    except ValueError:
        return math.nan


def sorted_sizes(labels: object) -> list[str]:
    unique = {str(x) for x in labels}  # type: ignore[attr-defined]
    return sorted(unique, key=lambda s: (math.isnan(size_key(s)), size_key(s), s))


def sorted_strategies(names: object) -> list[str]:
    unique = {str(x) for x in names}  # type: ignore[attr-defined]
    rank = {name: i for i, name in enumerate(STRATEGY_ORDER)}
    # an arm "<strategy>, <factor value>" (report.arms) sorts with its strategy
    return sorted(unique, key=lambda s: (rank.get(s.split(", ")[0], len(rank)), s))


def size_label(n_per_class: str) -> str:
    return "all data" if n_per_class == "all" else f"n={n_per_class}/class"


def size_slug(n_per_class: str) -> str:
    """The data size in MLflow metric names: ``n20``, ``nall``."""
    return "n" + "".join(c if c.isalnum() else "_" for c in n_per_class)


def pct(x: float | None, digits: int = 1) -> str:
    """An accuracy in percent (``91.2%``)."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}%"


def pp(x: float | None, digits: int = 1) -> str:
    """An accuracy difference in percentage points (``1.0 pp``)."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.{digits}f} pp"


def signed_pp(x: float | None, digits: int = 1) -> str:
    """A signed difference in percentage points with a true minus sign (``+3.3 pp``, ``−6.0 pp``)."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{100 * x:+.{digits}f} pp".replace("-", "−")


def sig(x: float | None, digits: int = 3) -> str:
    """A cost with ``digits`` significant figures, without scientific notation for ordinary values."""
    if x is None or math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e6:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
        return f"{x:,.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """A large count with an SI prefix (``1.23 TFLOPs``, ``5.3 M``)."""
    if x is None or math.isnan(x):
        return "n/a"
    for scale, prefix in _SI:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{x:.{digits}g} {unit}".rstrip()


def seconds(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.2f} h"
