"""``tlbench bench``: moved. The benchmark is not part of the package any more.

It lives in the repository's ``benchmarks/`` directory and drives tlbench through its public API;
``make bench`` runs it (``python -m benchmarks`` from the repository root, same options). This
command stays so that scripts calling it get that instruction instead of "unknown command".
"""

from __future__ import annotations

from collections.abc import Sequence

from tlbench.errors import TlbenchError

MOVED = (
    "the benchmark moved out of the package: run `make bench`, or from the repository root "
    "`.venv/bin/python -m benchmarks [--only STEP ...] [--repeats N] [--threads N] [--out PATH] "
    "[--budget-min M]` (docs/benchmarks.md)"
)


def main(argv: Sequence[str]) -> int:
    if any(arg in {"-h", "--help"} for arg in argv):  # asking is not an error: the answer, exit 0
        print(f"usage: make bench [ARGS='...']\n\n{MOVED}")
        return 0
    raise TlbenchError(MOVED)
