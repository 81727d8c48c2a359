"""The CLI commands with parts of their own (the others are in :mod:`tlbench.cli`): ``train`` and
``config`` (``overrides``), ``sweep``, ``screen`` and ``dashboard``."""
