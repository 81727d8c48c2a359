"""Backbones, weight sources, freeze plans, heads and the Lightning module."""
