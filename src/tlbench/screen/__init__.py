"""Zero-training screen of backbones: LogME, kNN and cross-validated probe accuracy on frozen features.

``run_screen`` (in :mod:`tlbench.screen.screen`) is the entry point for the CLI and for sweeps; the
score functions (:mod:`~tlbench.screen.logme`, :mod:`~tlbench.screen.knn`,
:mod:`~tlbench.screen.probe_cv`) are pure functions of feature arrays.
"""
