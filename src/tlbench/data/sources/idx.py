"""Reader for the idx format of MNIST-style datasets (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from tlbench.errors import DataError

# idx type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_HEADER = 4


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode idx bytes into an array of the stored shape and dtype.

    Args:
        data: The whole (decompressed) file.
        source: Named in error messages.

    Raises:
        DataError: The bytes are not a well-formed idx file.
    """
    if len(data) < _HEADER or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{source} is not an idx file (bad magic number); re-download or replace it")
    ndim = data[3]
    offset = _HEADER + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{source} is truncated inside its header; re-download or replace it")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=_HEADER))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source} holds {len(data)} bytes but its header {shape} needs {expected}; "
            "re-download or replace it"
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file, decompressing it when it starts with the gzip magic bytes (whatever its name)."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: {error}; re-download or replace it") from error
    return parse_idx(data, source=str(path))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzip when ``path`` ends in .gz); used for tests and fixtures."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = header + array.astype(_IDX_DTYPES[code]).tobytes()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)
