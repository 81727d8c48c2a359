"""Fixtures for the data tests: image files in every awkward flavour, written with Pillow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlbench.data import clear_source_cache

IMAGE_SIZE = (20, 14)  # width, height: not square, so the centre crop matters


@pytest.fixture(autouse=True)
def _fresh_source_cache() -> Iterator[None]:
    # every test decodes its own fixtures: no state leaks between tests through the source cache
    clear_source_cache()
    yield
    clear_source_cache()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tensors here are tiny; with two intra-op threads on a busy 2-core machine, OpenMP barriers
    # wait on descheduled threads and a 0.1 s test takes seconds
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def solid(colour: tuple[int, int, int], *, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
    """An RGB image of one colour: decoded values are then known exactly (up to JPEG error)."""
    return Image.new("RGB", size, colour)


def save_solid(path: Path, colour: tuple[int, int, int], *, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    solid(colour).save(path, format=fmt)
    return path


def make_class_tree(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """``root/<split>/<class>/i.png`` (split "" = flat) with distinct solid colours per file."""
    serial = 0
    for split, classes in counts.items():
        for name, count in classes.items():
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                serial += 1
                save_solid(folder / f"{serial}.png", (serial % 251, (serial * 7) % 253, (serial * 13) % 255))
    return root


@pytest.fixture
def class_tree() -> Callable[[Path, dict[str, dict[str, int]]], Path]:
    """The :func:`make_class_tree` builder, for tests that lay out their own folders."""
    return make_class_tree


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """A train/ + test/ tree holding every case the image-folder source must survive.

    train/cats: rgb.jpg, gray.png (L), rgba.png (fully transparent), cmyk.jpg, deep.png (16-bit),
    palette.gif, really_png.jpg (PNG bytes behind a .jpg name), dup.png (also in test/), plus
    empty.jpg (0 bytes), truncated.jpg, text.png (text behind a .png name), notes.txt, .DS_Store.
    train/dogs: 4 pngs; train/lonely: 1 png; train/empty_class: only a .txt file.
    test/cats: a.png + dup_copy.png (same bytes as train/cats/dup.png); test/dogs: 1 png.
    """
    root = tmp_path / "odd"
    cats = root / "train" / "cats"
    cats.mkdir(parents=True)
    solid((200, 30, 40)).save(cats / "rgb.jpg", quality=95)
    Image.new("L", IMAGE_SIZE, 100).save(cats / "gray.png")
    Image.new("RGBA", IMAGE_SIZE, (10, 20, 30, 0)).save(cats / "rgba.png")
    solid((0, 128, 255)).convert("CMYK").save(cats / "cmyk.jpg", quality=95)
    Image.fromarray(np.full(IMAGE_SIZE[::-1], 32768, dtype=np.uint16)).save(cats / "deep.png")
    solid((0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(cats / "palette.gif")
    solid((1, 2, 3)).save(cats / "really_png.jpg", format="PNG")
    solid((9, 9, 9)).save(cats / "dup.png")
    (cats / "empty.jpg").write_bytes(b"")
    full = (cats / "rgb.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (cats / "text.png").write_text("not an image")
    (cats / "notes.txt").write_text("labelling notes")
    (cats / ".DS_Store").write_bytes(b"\x00\x01")
    make_class_tree(root, {"train": {"dogs": 4, "lonely": 1}, "test": {"cats": 1, "dogs": 1}})
    (root / "train" / "empty_class").mkdir()
    (root / "train" / "empty_class" / "readme.txt").write_text("nothing here")
    (root / "test" / "cats" / "dup_copy.png").write_bytes((cats / "dup.png").read_bytes())
    return root
