"""Placeholder, replaced by the real implementation."""

from lightning.pytorch.callbacks import Callback


class BatchSizeRamp(Callback):
    """Not implemented yet."""
