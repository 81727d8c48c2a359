"""``python -m benchmarks [--only ...] [--repeats N] [--threads N] [--out PATH] [--budget-min M]``."""

from benchmarks.cli import main

raise SystemExit(main())
