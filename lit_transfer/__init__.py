"""lit_transfer: transfer learning on small image datasets with PyTorch Lightning, timm and Albumentations."""

from lit_transfer.callbacks import BatchSizeRamp, LayerFreezing, LRScaling, OptimizerSwap
from lit_transfer.freezing import (
    AutoFreeze,
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    Milestones,
    SurgicalFineTune,
    UnfreezeAtEpochs,
)
from lit_transfer.lr_finder import GroupLRFinder, LRFinderResult, find_lr
from lit_transfer.models import TransferClassifier, TransferRegressor

__version__ = "0.1.0"

__all__ = [
    "AutoFreeze",
    "BatchSizeRamp",
    "FreezeUnfreeze",
    "FullFineTune",
    "GradualUnfreeze",
    "GroupLRFinder",
    "LRFinderResult",
    "LRScaling",
    "LayerFreezing",
    "LinearProbe",
    "Milestones",
    "OptimizerSwap",
    "SurgicalFineTune",
    "TransferClassifier",
    "TransferRegressor",
    "UnfreezeAtEpochs",
    "__version__",
    "find_lr",
]
