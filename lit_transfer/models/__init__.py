"""LightningModules."""

from lit_transfer.models.base import TransferModule
from lit_transfer.models.classifier import TransferClassifier
from lit_transfer.models.regressor import TransferRegressor
from lit_transfer.models.segmenter import TransferSegmenter

__all__ = ["TransferClassifier", "TransferModule", "TransferRegressor", "TransferSegmenter"]
