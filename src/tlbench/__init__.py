"""tlbench: a transfer-learning trade-off benchmark (accuracy against compute)."""

__version__ = "0.1.0"
