"""Placeholder, replaced by the real implementation."""

from lightning.pytorch.callbacks import Callback


class OptimizerSwap(Callback):
    """Not implemented yet."""
