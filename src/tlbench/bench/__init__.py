"""The performance benchmark behind ``make bench``: harness overhead, caching speedups, tracking
overhead and what pruning saves, each a ratio of interleaved, repeated measurements."""
