"""Zero-training screen of backbones: LogME, kNN and cross-validated probe accuracy on frozen features.

Three parts: :mod:`~tlbench.screen.compose` (what a user or a sweep types -> Hydra overrides),
:mod:`~tlbench.screen.screen` (``run_screen``, the entry point for the CLI and for sweeps: features
through the trial pipeline, ``as_is``, the MLflow run, the table) and :mod:`~tlbench.screen.scores` (pure
functions of feature arrays).
"""
