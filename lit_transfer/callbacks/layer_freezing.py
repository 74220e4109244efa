"""Placeholder, replaced by the real implementation."""

from lightning.pytorch.callbacks import Callback


class LayerFreezing(Callback):
    """Not implemented yet."""
