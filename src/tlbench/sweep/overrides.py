"""What the command line adds to a sweep file: Hydra overrides, a photo folder, a class map, data sizes.

All of it becomes part of the :class:`SweepSpec` (``overrides``, factors, ``where``) before the sweep
is checked, so it is validated like the file, recorded with the study (``sweep.yaml`` and the
definition digest) and refused, like any other change, when a resumed study was started without it.
"""

from __future__ import annotations

from dataclasses import replace

from tlbench.sweep.cells import override
from tlbench.sweep.spec import AUTO_SIZES, SIZE_FACTOR, Scalar, SweepSpec, parse_condition, sweep_error

SIZE_LADDER = (5, 20, 80, 320, 1280, 5120)  # about x4 apart: a few sizes, not a grid


def with_overrides(spec: SweepSpec, overrides: tuple[str, ...]) -> SweepSpec:
    """``spec`` with command-line Hydra overrides appended to its base (factors still win)."""
    if not overrides:
        return spec
    searched = {p.path for p in spec.search} | {p.path for _, ps in spec.search_where for p in ps}
    for text in overrides:
        key, sep, _ = text.partition("=")
        key = key.lstrip("+~")
        if not sep or not key:
            raise sweep_error(spec.name, f"command-line override {text!r} must look like key=value")
        if key in spec.factor_names:
            raise sweep_error(
                spec.name, f"command-line override {text!r} sets '{key}', a factor of this sweep: "
                "its values come from the sweep file (edit factors there, or use another sweep)"
            )  # fmt: skip
        if key in searched:
            raise sweep_error(
                spec.name, f"command-line override {text!r} sets '{key}', which this sweep tunes"
            )
    return replace(spec, overrides=spec.overrides + tuple(overrides))


def with_photo_folder(spec: SweepSpec, root: str, class_map: str | None) -> SweepSpec:
    """The photo protocol on a user's folder: ``data.root``, and ``as_is`` when a class map is given."""
    spec = with_overrides(spec, (override("data.root", root),))
    if class_map is None:
        return spec
    factors = dict(spec.factors)
    strategies = factors.get("strategy")
    if strategies is None:
        raise sweep_error(spec.name, "a class map needs a sweep with a 'strategy' factor (as_is joins it)")
    if "as_is" not in strategies:
        factors["strategy"] = (*strategies, "as_is")
    condition = parse_condition(spec.name, "strategy=as_is", factors)
    where = (*spec.where, (condition, (f"strategy.class_map={class_map}",)))
    return replace(spec, factors=tuple(factors.items()), where=where)


def derive_sizes(smallest_class: int) -> tuple[Scalar, ...]:
    """A few data sizes from 5 per class up to all of the smallest class (``None`` = all).

    Each ladder step is kept while it is at most half the smallest class, so the last step before
    "all" differs from it by at least a factor of two.
    """
    if smallest_class < 1:
        raise ValueError(f"smallest_class must be >= 1, got {smallest_class=}")
    sizes: list[Scalar] = [n for n in SIZE_LADDER if 2 * n <= smallest_class]
    return (*sizes, None)


def has_auto_sizes(spec: SweepSpec) -> bool:
    return dict(spec.factors).get(SIZE_FACTOR) == (AUTO_SIZES,)


def with_sizes(spec: SweepSpec, sizes: tuple[Scalar, ...]) -> SweepSpec:
    """Replace the ``[auto]`` data-size factor by concrete sizes."""
    factors = tuple((k, sizes if k == SIZE_FACTOR else v) for k, v in spec.factors)
    return replace(spec, factors=factors)
