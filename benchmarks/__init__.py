"""The performance benchmark behind ``make bench`` (``python -m benchmarks`` from the repository root):
harness overhead, caching speedups, tracking overhead, the eager settings' cost, what pruning saves
and how far the default sweep is from the machine's training throughput, each a ratio of
interleaved, repeated measurements.

Not part of the ``tlbench`` package: it drives tlbench through its public API only (``train``,
``load_config``, ``prepare``, ``tlbench sweep``'s ``main``, the cost and tracking readers).
"""
