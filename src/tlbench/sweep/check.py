"""Check a sweep against the config tree before anything runs: every cell must compose.

Only Hydra knows which paths exist and which values they accept, so each cell is composed once
(with every searched parameter at its low end / first choice) and, on failure, the culprit is found
by composing the pieces one at a time: the error names the factor, ``where`` entry or search key.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlbench.config import RunConfig, load_config
from tlbench.errors import ConfigError
from tlbench.strategies import ignored_keys
from tlbench.sweep.cells import Cell, cell_overrides, cell_search, expand_cells, override
from tlbench.sweep.spec import SearchParam, SweepSpec, sweep_error


def low_override(param: SearchParam) -> str:
    """The parameter at the low end of its range (its first choice), as a Hydra override."""
    value = param.choices[0] if param.choices is not None else param.low
    if param.integer and value is not None:
        value = int(value)
    return override(param.path, value)


def _high(param: SearchParam) -> list[str]:
    if param.choices is not None:
        return [override(param.path, choice) for choice in param.choices[1:]]
    value = int(param.high) if param.integer and param.high is not None else param.high
    return [override(param.path, value)]


def _compose(overrides: Sequence[str]) -> RunConfig | ConfigError:
    try:
        return load_config(overrides)
    except ConfigError as exc:
        return exc


def _explain(spec: SweepSpec, cell: Cell, params: list[SearchParam], error: ConfigError) -> ConfigError:
    """Compose piece by piece to say which part of the sweep file is wrong."""
    base = list(spec.base)
    if isinstance(_compose(base), ConfigError):
        return sweep_error(spec.name, f"base overrides: {error}")
    base += spec.overrides
    result = _compose(base)
    if isinstance(result, ConfigError):
        return sweep_error(spec.name, f"command-line overrides ({' '.join(spec.overrides)}): {result}")
    for path, value in cell.values:
        result = _compose([*base, override(path, value)])
        if isinstance(result, ConfigError):
            return sweep_error(spec.name, f"factor '{path}' (value {value!r}): {result}")
    fixed = cell_overrides(spec, cell)
    if isinstance(_compose(fixed), ConfigError):
        return sweep_error(spec.name, f"cell {cell.key} (with its 'where' overrides): {error}")
    for param in params:
        result = _compose([*fixed, low_override(param)])
        if isinstance(result, ConfigError):
            return sweep_error(spec.name, f"search key '{param.path}': {result}")
    return sweep_error(spec.name, f"cell {cell.key}: {error}")


def first_cell_config(spec: SweepSpec) -> RunConfig:
    """The first cell's config, unchecked beyond composition (workers of an already checked sweep)."""
    return load_config(cell_overrides(spec, expand_cells(spec)[0]))


def check_searched_keys(spec: SweepSpec, cell: Cell, params: Sequence[SearchParam], cfg: RunConfig) -> None:
    """Refuse a searched key the cell's strategy never reads: its tuning trials would all be one config.

    The strategy and the probe's solver come from the cell's composed config (a factor, ``where`` or
    the base may set them); :func:`tlbench.strategies.ignored_keys` says what that strategy ignores.
    """
    name = cfg.strategy.name.value
    ignored = ignored_keys(name, probe_solver=cfg.strategy.probe.solver.value)
    for param in params:
        prefix = next((p for p in ignored if param.path.startswith(p)), None)
        if prefix is None:
            continue
        where = f" (in {spec.source})" if spec.source else ""
        raise sweep_error(
            spec.name,
            f"strategy {name} ignores '{param.path}', which cell {cell.key} searches: its tuning trials "
            f"would all train the same model; search another key for {name} under "
            f"search_where['strategy={name}'] (e.g. strategy.probe.l2 for a linear probe){where}",
        )


def check_lora(spec: SweepSpec, cell: Cell, cfg: RunConfig, checked: set[tuple[str, str]]) -> None:
    """A lora cell whose backbone has no layer the adapters can go on fails here, not mid-sweep.

    The backbone is built on torch's meta device (no weights); each (backbone, lora config) once.
    """
    if cfg.strategy.name.value != "lora":
        return
    key = (cfg.backbone.name, repr(cfg.strategy.lora))
    if key in checked:
        return
    from tlbench.models.network import check_lora as lora_targets  # torch and timm: only for lora cells

    try:
        lora_targets(cfg.backbone.name, cfg.strategy.lora)
    except ConfigError as exc:
        raise sweep_error(spec.name, f"cell {cell.key}: {exc}") from None
    checked.add(key)


def check_against_config(spec: SweepSpec) -> RunConfig:
    """Compose every cell; returns the first cell's config (its tracking settings are the study's)."""
    cells = expand_cells(spec)
    first: RunConfig | None = None
    lora_checked: set[tuple[str, str]] = set()
    for index, cell in enumerate(cells):
        params = cell_search(spec, cell)
        fixed = cell_overrides(spec, cell)
        result = _compose([*fixed, *(low_override(p) for p in params)])
        if isinstance(result, ConfigError):
            raise _explain(spec, cell, params, result)
        check_searched_keys(spec, cell, params, result)
        check_lora(spec, cell, result, lora_checked)
        if index == 0:
            first = result
            for param in params:  # the other end of each range, and every other choice, once
                for text in _high(param):
                    other = _compose([*fixed, text])
                    if isinstance(other, ConfigError):
                        raise sweep_error(spec.name, f"search key '{param.path}' ({text}): {other}")
    assert first is not None  # there is always at least one cell
    if not first.tracking.enabled:
        raise sweep_error(
            spec.name, "sweeps record every trial in MLflow: remove tracking=disabled from base"
        )
    return first


def smallest_class(spec: SweepSpec) -> tuple[int, str]:
    """Training images in the smallest class of the sweep's dataset (base + command-line overrides),
    and where that dataset is: what ``data.n_per_class: [auto]`` derives its sizes from."""
    from tlbench.sweep.estimate import data_counts  # decodes the data: only when asked

    counts = data_counts(spec)
    return min(counts.pool_per_class), counts.where
