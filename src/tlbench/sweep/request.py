"""What the sweep command was asked, and the sweep definition it names (imports no torch).

A missing data folder or sweep file, or a bad sweep file, is reported from here, before torch and
the training stack are imported (a second, not the 20 s a first import of torch takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tlbench.errors import ConfigError
from tlbench.sweep.loader import load_sweep, sweeps_dir
from tlbench.sweep.overrides import (
    derive_sizes,
    has_auto_sizes,
    with_overrides,
    with_photo_folder,
    with_sizes,
)
from tlbench.sweep.spec import SweepSpec

PHOTO_SWEEP = "photos"  # the protocol --data runs
DEFAULT_SWEEP = "default"


@dataclass(frozen=True)
class SweepRequest:
    """A parsed ``tlbench sweep`` command line."""

    sweep: str | None = None  # a name in sweeps/ or a YAML path (None: photos with data, else default)
    data: str | None = None  # a photo folder: the photo protocol on it
    class_map: str | None = None
    overrides: tuple[str, ...] = ()
    study: str | None = None
    workers: int | None = 1  # None: --workers auto (cost.threads.auto_workers, decided by run_sweep)
    storage: str | None = None
    worker: bool = False  # a worker process spawned by a supervisor
    worker_index: int = 0
    threads: int | None = None  # a spawned worker: the torch threads its supervisor planned

    @property
    def sweep_name(self) -> str:
        return self.sweep or (PHOTO_SWEEP if self.data else DEFAULT_SWEEP)

    def forwarded(self) -> list[str]:
        """What a spawned worker needs to rebuild the same definition."""
        out = ["--data", self.data] if self.data else []
        out += ["--class-map", self.class_map] if self.class_map else []
        return [*out, *self.overrides]


def check_request(request: SweepRequest) -> None:
    """Every mistake that needs no config composition and no torch: one line each, at once."""
    if request.workers is not None and request.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {request.workers}")
    if request.class_map and not request.data:
        raise ConfigError("--class-map goes with --data FOLDER (it maps that folder's classes)")
    if request.data is not None and not Path(request.data).expanduser().is_dir():
        raise ConfigError(f"--data {request.data}: no such folder (give a folder of class sub-folders)")
    spec = load_sweep(request.sweep_name)  # a missing or bad sweep file: one line, naming the file
    given = request.data or any(o.startswith("data.root=") for o in request.overrides)
    if needs_folder(spec) and not given:
        what = "the photo protocol" if spec.name == PHOTO_SWEEP else f"sweep '{spec.name}'"
        raise ConfigError(
            f"{what} trains on your photos and needs their folder: make sweep SWEEP={spec.name} "
            "DATA=path/to/folder (tlbench sweep --data PATH)"
        )


def load_spec(request: SweepRequest, *, announce: bool = True) -> SweepSpec:
    """The sweep file plus the command line: overrides, the photo folder and class map, data sizes."""
    spec = with_overrides(load_sweep(request.sweep_name), request.overrides)
    if request.data:
        root = Path(request.data).expanduser().resolve()
        spec = with_photo_folder(spec, str(root), request.class_map)
    if has_auto_sizes(spec):
        from tlbench.sweep.check import smallest_class  # decodes the data: only when sizes depend on it

        smallest, where = smallest_class(spec)
        sizes = derive_sizes(smallest)
        spec = with_sizes(spec, sizes)
        if announce:
            shown = ", ".join("all" if n is None else str(n) for n in sizes)
            print(f"data sizes: {shown} per class (the smallest class of {where} has {smallest} "
                  "training images)", flush=True)  # fmt: skip
    return spec


def needs_folder(spec: SweepSpec) -> bool:
    """An image-folder sweep whose file leaves the folder to the command line (--data)."""
    return "data=imagefolder" in spec.base and not any(o.startswith("data.root=") for o in spec.base)


def shipped_sweeps() -> list[tuple[str, str]]:
    """(name, first sentence of its description) of every sweep in the sweeps folder, for ``--help``."""
    out = []
    for path in sorted(sweeps_dir().glob("*.yaml")):
        try:
            text = str((yaml.safe_load(path.read_text()) or {}).get("description") or "")
        except yaml.YAMLError:
            text = "(not valid YAML)"
        first = " ".join(text.split()).split(". ")[0].rstrip(".")
        out.append((path.stem, first if len(first) <= 100 else first[:99] + "…"))
    return out
