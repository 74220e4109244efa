"""lit_transfer: transfer learning on small image datasets with PyTorch Lightning, timm and Albumentations."""

from lit_transfer.callbacks import BatchSizeRamp, LayerFreezing, LRScaling, OptimizerSwap
from lit_transfer.freezing import (
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    Milestones,
    UnfreezeAtEpochs,
)
from lit_transfer.models import TransferClassifier

__version__ = "0.1.0"

__all__ = [
    "BatchSizeRamp",
    "FreezeUnfreeze",
    "FullFineTune",
    "GradualUnfreeze",
    "LRScaling",
    "LayerFreezing",
    "LinearProbe",
    "Milestones",
    "OptimizerSwap",
    "TransferClassifier",
    "UnfreezeAtEpochs",
    "__version__",
]
