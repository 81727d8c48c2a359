"""The HTML report as a browser shows it: Debian's chromium, headless, on the built report.

Skipped (with the reason) where no chromium is installed; CI installs it (see .ci/run).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageStat

_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--disable-dev-shm-usage",
)  # fmt: skip
PROBE_BLUE = (31, 119, 180)  # linear_probe's colour in every figure
# Injected into a copy of the page only: once loaded, write each image's decoded size into the DOM.
_PROBE = (
    '<script>window.addEventListener("load", () => { document.body.setAttribute("data-images", '
    "JSON.stringify([...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.complete]))); });"
    "</script>"
)


def _run(browser: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_figures_render_in_a_browser(chromium: str, built_report: Any, tmp_path: Path) -> None:
    page = (built_report.directory / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))
    dom = _run(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r'data-images="([^"]*)"', dom)
    assert match, "the page did not finish loading"
    images = json.loads(match.group(1).replace("&quot;", '"'))
    # one image per drawn figure, each decoded by the browser with a real size
    assert len(images) == sum(1 for p in built_report.files if p.suffix == ".png")
    assert all(complete and width > 300 and height > 200 for width, height, complete in images), images


def test_screenshot_is_not_blank(chromium: str, built_report: Any, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    page = (built_report.directory / "report.html").as_uri()
    _run(chromium, tmp_path / "profile", "--window-size=1280,4200", f"--screenshot={shot}", page)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 4200)
    # text, tables and figures: far from a uniform page
    assert max(ImageStat.Stat(image).stddev) > 20
    # the figures were painted, not just laid out: linear_probe's blue shows on the page
    pixels = np.asarray(image, dtype=np.int16)
    blue = int((np.abs(pixels - np.array(PROBE_BLUE, dtype=np.int16)).max(axis=2) < 12).sum())
    assert blue > 100, blue
    image.save(built_report.directory.parent / "screenshot.png")  # kept with the test's reports to look at
