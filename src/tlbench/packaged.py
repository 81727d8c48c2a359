"""The folders of definitions that ship inside the package: ``conf/`` (Hydra groups) and ``sweeps/``.

Both stay at the repository root, where users edit them. The package reaches them as
``tlbench/_conf`` and ``tlbench/_sweeps``: symbolic links to ``../../conf`` and ``../../sweeps`` in
the source tree (so a source checkout and an editable install see an edit at once), copied as
package data into a wheel (so an installed tlbench finds them from any working directory).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tlbench.errors import ConfigError

# The folder at the repository root -> its name inside the package (pyproject.toml, package-data).
PACKAGED = {"conf": "_conf", "sweeps": "_sweeps"}


def packaged_dir(name: str, *, env: str) -> Path:
    """The package's copy of the top-level folder ``name`` (``conf`` or ``sweeps``).

    Args:
        name: the folder's name at the repository root.
        env: the environment variable that points at another folder instead (named in the error).
    """
    if name not in PACKAGED:
        raise ValueError(f"no packaged folder {name!r}: one of {', '.join(PACKAGED)}")
    root = files("tlbench")
    # Hydra and the sweep loader read a real folder: an unpacked install, not one inside a zip.
    path = root / PACKAGED[name] if isinstance(root, Path) else None
    if path is None or not path.is_dir():
        raise ConfigError(
            f"tlbench's {name}/ folder is missing from the package ({path or root}): "
            f"reinstall tlbench (pip install .), or set {env} to a {name}/ folder"
        )
    return path.resolve()  # the source tree's link -> the top-level folder, as error messages name it
