"""Helpers shared by the training tests (the fixtures live in conftest.py)."""

from __future__ import annotations


def run(cfg, **kwargs):
    """Train in-process with the recipe's library entry point."""
    from pfmvg_plugin.training.trainer import train

    return train(cfg, **kwargs)
