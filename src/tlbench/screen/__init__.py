"""Zero-training screen of backbones: LogME, kNN and cross-validated probe accuracy on frozen features.

Two parts: :mod:`~tlbench.screen.screen` (``run_screen``, the entry point for the CLI and for sweeps:
what a user types -> overrides, features through the trial pipeline, ``as_is``, the MLflow run, the
table) and :mod:`~tlbench.screen.scores` (pure functions of feature arrays).
"""
