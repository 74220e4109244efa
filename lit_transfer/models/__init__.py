"""LightningModules."""

from lit_transfer.models.base import TransferModule
from lit_transfer.models.classifier import TransferClassifier
from lit_transfer.models.regressor import TransferRegressor

__all__ = ["TransferClassifier", "TransferModule", "TransferRegressor"]
