"""``pip install .`` (a wheel, not editable) gives a tlbench that runs from any directory: ``conf/``
and ``sweeps/`` travel inside the package.

The fresh virtual environment borrows this environment's dependencies (torch & co.) through a
``.pth`` file that lists only the folder: a plain path line adds it to ``sys.path`` without running
the ``.pth`` files inside it, so this environment's editable tlbench stays invisible there.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What a build reads: the project metadata, the package (with its links), the folders they link to.
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf", "sweeps")

# Where the installed tlbench looks things up (printed as JSON by the fresh interpreter).
PROBE = """
import json, tlbench
from tlbench.config.compose import config_dir
from tlbench.sweep.spec import load_sweep, sweep_path
print(json.dumps({
    "package": str(tlbench.__file__),
    "conf": str(config_dir()),
    "default_sweep": str(sweep_path("default")),
    "default_sweep_name": load_sweep("default").name,
}))
"""


def _clean_env() -> dict[str, str]:
    """This process's environment without what would point the fresh one back at the sources."""
    drop = ("PYTHONPATH", "PYTHONHOME", "TLBENCH_CONFIG_DIR", "TLBENCH_SWEEPS_DIR", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(argv: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


def _copy_sources(dest: Path) -> Path:
    """A copy of what a build reads (pip builds in the tree it is given: not in the repo's)."""
    dest.mkdir(exist_ok=True)
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(REPO / name, dest / name)
    return dest


def _install(source: Path, venv: Path, *, editable: bool) -> Path:
    """A new virtual environment at ``venv`` with tlbench installed from ``source``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv, 60)
    # This environment's site-packages as plain lines: its packages, not its editable tlbench.
    Path(purelib.stdout.strip(), "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed"]
    pip += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
    installed = _run([*pip, *(["-e"] if editable else []), source], venv, 300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tlbench installed from a wheel (``pip install .``) into a new virtual environment."""
    source = _copy_sources(tmp_path_factory.mktemp("source"))
    return _install(source, tmp_path_factory.mktemp("venv"), editable=False)


def test_the_installed_package_carries_conf_and_sweeps(fresh_venv: Path, tmp_path: Path) -> None:
    # run from an unrelated directory, tlbench is the installed copy and finds its folders inside it
    probe = _run([fresh_venv / "bin" / "python", "-c", PROBE], tmp_path, 120)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    package = Path(found["package"]).parent
    assert fresh_venv in package.parents and REPO not in package.parents
    assert Path(found["conf"]) == package / "_conf"
    assert not (package / "_conf").is_symlink()  # copied into the wheel, not a link back to the repo
    assert Path(found["default_sweep"]) == package / "_sweeps" / "default.yaml"
    assert found["default_sweep_name"] == "default"
    # every definition in the repository's folders is in the installed package
    for folder, inside in (("conf", "_conf"), ("sweeps", "_sweeps")):
        shipped = sorted(p.relative_to(REPO / folder) for p in (REPO / folder).rglob("*.yaml"))
        assert sorted(p.relative_to(package / inside) for p in (package / inside).rglob("*.yaml")) == shipped


def test_installed_cli_trains_and_finds_sweeps_from_another_directory(
    fresh_venv: Path, tmp_path: Path
) -> None:
    # `tlbench train` composes the packaged conf/ and completes a trial in a directory with no repo
    tlbench = fresh_venv / "bin" / "tlbench"
    train = _run([tlbench, "train", "data=synthetic", "trainer=quick", "tracking=disabled"], tmp_path, 300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "status: completed" in train.stdout and "test/acc" in train.stdout
    # `tlbench sweep` looks sweep names up in the packaged sweeps/ (an unknown one lists them)
    sweep = _run([tlbench, "sweep", "--sweep", "no_such_sweep"], tmp_path, 120)
    assert sweep.returncode == 2
    assert "known sweeps:" in sweep.stderr and "default" in sweep.stderr.split("known sweeps:")[1]
    assert f"{fresh_venv}" in sweep.stderr  # the expected path is inside the installed package


def test_an_editable_install_sees_conf_edits_at_once(tmp_path: Path) -> None:
    # `make setup` installs with -e: an edit of conf/ applies to the next command, no reinstall
    source = _copy_sources(tmp_path / "source")
    venv = _install(source, tmp_path / "venv", editable=True)
    config = source / "conf" / "config.yaml"
    assert "\nseed: 0\n" in config.read_text()
    config.write_text(config.read_text().replace("\nseed: 0\n", "\nseed: 7\n"))
    probe = "from tlbench.config import load_config; from tlbench.config.compose import config_dir; "
    probe += "print(config_dir(), load_config().seed)"
    seen = _run([venv / "bin" / "python", "-c", probe], tmp_path, 120)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == [str(source / "conf"), "7"]
