"""Sweeps: ``sweeps/<name>.yaml`` -> per-cell Optuna studies -> in-process trials tracked in MLflow.

Entry point: :func:`tlbench.sweep.run.run_sweep` (``tlbench sweep``). Its parts: ``spec`` (the sweep
file), ``plan`` (cells, the fair protocol, estimate), ``study`` (storage, liveness), ``worker`` (one
worker, one trial), ``race`` and ``screen_phase`` (two phases), ``run`` (supervisor and progress).
"""
