"""Sweeps: ``sweeps/<name>.yaml`` -> per-cell Optuna studies -> in-process trials tracked in MLflow.

Entry point: ``tlbench sweep`` (:mod:`tlbench.commands.sweep`); the protocol is documented in
:mod:`tlbench.sweep.protocol` and :mod:`tlbench.sweep.worker`.
"""
