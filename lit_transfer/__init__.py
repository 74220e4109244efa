"""lit_transfer: transfer learning on small image datasets with PyTorch Lightning, timm and Albumentations."""

from importlib.metadata import PackageNotFoundError, version

from lit_transfer.callbacks import (
    BatchSizeRamp,
    ExceptionCheckpoint,
    FeatureCache,
    GroupLRFinder,
    LayerFreezing,
    LRScaling,
    NonFiniteLossGuard,
    OptimizerSwap,
    PredictionCSVWriter,
    RunReport,
    SegmentationMaskWriter,
    SynchronizedStop,
)
from lit_transfer.cli import TransferCLI
from lit_transfer.export import export_onnx, export_torchscript
from lit_transfer.files.checkpoint_io import AtomicCheckpointIO
from lit_transfer.freezing import (
    AutoFreeze,
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    SurgicalFineTune,
    UnfreezeAtEpochs,
)
from lit_transfer.models import TransferClassifier, TransferRegressor, TransferSegmenter
from lit_transfer.tuner.finder import find_lr
from lit_transfer.tuner.result import LRFinderResult

try:
    __version__ = version("lit-transfer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AtomicCheckpointIO",
    "AutoFreeze",
    "BatchSizeRamp",
    "ExceptionCheckpoint",
    "FeatureCache",
    "FreezeUnfreeze",
    "FullFineTune",
    "GradualUnfreeze",
    "GroupLRFinder",
    "LRFinderResult",
    "LRScaling",
    "LayerFreezing",
    "LinearProbe",
    "NonFiniteLossGuard",
    "OptimizerSwap",
    "PredictionCSVWriter",
    "RunReport",
    "SegmentationMaskWriter",
    "SurgicalFineTune",
    "SynchronizedStop",
    "TransferCLI",
    "TransferClassifier",
    "TransferRegressor",
    "TransferSegmenter",
    "UnfreezeAtEpochs",
    "__version__",
    "export_onnx",
    "export_torchscript",
    "find_lr",
]
