"""Cost accounting: device time, FLOPs (validated), throughput and memory — one place that defines them."""
