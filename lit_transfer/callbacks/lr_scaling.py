"""Placeholder, replaced by the real implementation."""

from lightning.pytorch.callbacks import Callback


class LRScaling(Callback):
    """Not implemented yet."""
