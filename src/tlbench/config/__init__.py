"""Typed configuration: schemas and Hydra composition."""

from tlbench.config.compose import load_config
from tlbench.config.schema import RunConfig

__all__ = ["RunConfig", "load_config"]
