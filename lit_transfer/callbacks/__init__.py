"""Lightning callbacks usable in any Lightning project, and the prediction writer."""

from lit_transfer.callbacks.batch_size_ramp import BatchSizeRamp
from lit_transfer.callbacks.exception_checkpoint import ExceptionCheckpoint
from lit_transfer.callbacks.feature_cache import FeatureCache
from lit_transfer.callbacks.group_lr_finder import GroupLRFinder
from lit_transfer.callbacks.head_probe import HeadProbe
from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.callbacks.lr_scaling import LRScaling
from lit_transfer.callbacks.mask_writer import SegmentationMaskWriter
from lit_transfer.callbacks.non_finite_guard import NonFiniteLossGuard
from lit_transfer.callbacks.optimizer_swap import OptimizerSwap
from lit_transfer.callbacks.prediction_writer import PredictionCSVWriter
from lit_transfer.callbacks.report import RunReport
from lit_transfer.callbacks.synchronized_stop import SynchronizedStop

__all__ = [
    "BatchSizeRamp",
    "ExceptionCheckpoint",
    "FeatureCache",
    "GroupLRFinder",
    "HeadProbe",
    "LRScaling",
    "LayerFreezing",
    "NonFiniteLossGuard",
    "OptimizerSwap",
    "PredictionCSVWriter",
    "RunReport",
    "SegmentationMaskWriter",
    "SynchronizedStop",
]
