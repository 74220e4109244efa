"""lit_transfer: transfer learning on small image datasets with PyTorch Lightning, timm and Albumentations.

The public names below are imported on first use, so ``lit-transfer --version`` and ``lit-transfer recipes`` start
without importing Lightning, timm or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lit_transfer._version import __version__

if TYPE_CHECKING:
    from lit_transfer.callbacks import (
        BatchSizeRamp,
        ExceptionCheckpoint,
        FeatureCache,
        GroupLRFinder,
        HeadProbe,
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
    "HeadProbe",
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

_HOMES = {
    "AtomicCheckpointIO": "lit_transfer.files.checkpoint_io",
    "AutoFreeze": "lit_transfer.freezing",
    "BatchSizeRamp": "lit_transfer.callbacks",
    "ExceptionCheckpoint": "lit_transfer.callbacks",
    "export_onnx": "lit_transfer.export",
    "export_torchscript": "lit_transfer.export",
    "FeatureCache": "lit_transfer.callbacks",
    "find_lr": "lit_transfer.tuner.finder",
    "FreezeUnfreeze": "lit_transfer.freezing",
    "FullFineTune": "lit_transfer.freezing",
    "GradualUnfreeze": "lit_transfer.freezing",
    "GroupLRFinder": "lit_transfer.callbacks",
    "HeadProbe": "lit_transfer.callbacks",
    "LayerFreezing": "lit_transfer.callbacks",
    "LinearProbe": "lit_transfer.freezing",
    "LRFinderResult": "lit_transfer.tuner.result",
    "LRScaling": "lit_transfer.callbacks",
    "NonFiniteLossGuard": "lit_transfer.callbacks",
    "OptimizerSwap": "lit_transfer.callbacks",
    "PredictionCSVWriter": "lit_transfer.callbacks",
    "RunReport": "lit_transfer.callbacks",
    "SegmentationMaskWriter": "lit_transfer.callbacks",
    "SurgicalFineTune": "lit_transfer.freezing",
    "SynchronizedStop": "lit_transfer.callbacks",
    "TransferClassifier": "lit_transfer.models",
    "TransferCLI": "lit_transfer.cli",
    "TransferRegressor": "lit_transfer.models",
    "TransferSegmenter": "lit_transfer.models",
    "UnfreezeAtEpochs": "lit_transfer.freezing",
}
"""The module each public name is imported from."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
