"""LightningModules."""

from lit_transfer.models.classifier import TransferClassifier

__all__ = ["TransferClassifier"]
