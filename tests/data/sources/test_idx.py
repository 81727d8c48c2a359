from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tlbench.data.sources.idx import parse_idx, read_idx, write_idx
from tlbench.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip(tmp_path: Path, dtype: type, name: str) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    read = read_idx(tmp_path / name)
    # values, shape and dtype survive, compressed or not, in native byte order
    assert read.dtype == np.dtype(dtype) and np.array_equal(read, array)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels.gz", np.arange(3, dtype=np.uint8))
    (tmp_path / "labels").write_bytes((tmp_path / "labels.gz").read_bytes())
    # a gzip file without the .gz suffix still reads
    assert read_idx(tmp_path / "labels").tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),  # first byte must be 0
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic"),  # unknown type code
        (b"\x00\x00\x08\x02\x00\x00", "truncated inside its header"),  # dims cut off
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "needs 11"),  # body shorter than the header says
    ],
    ids=["first-byte", "type-code", "short-header", "short-body"],
)
def test_malformed_data_raises_data_error(data: bytes, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        parse_idx(data, source="f")


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    # a cut-off download is reported with its path, not as a zlib traceback
    with pytest.raises(DataError, match=r"broken\.gz"):
        read_idx(path)
