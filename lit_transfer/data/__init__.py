"""DataModules, datasets, samplers and Albumentations transforms for small image datasets."""

import os as _os

# Albumentations checks PyPI for updates at import time unless told not to; lit_transfer works offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lit_transfer.data.base import BaseImageDataModule
from lit_transfer.data.csv_table import CSVDataModule
from lit_transfer.data.dataset import ArrayDataset, ImageDataset
from lit_transfer.data.decode import BadImageError, load_image, scan_images
from lit_transfer.data.digits import DigitsDataModule
from lit_transfer.data.file_base import FileImageDataModule
from lit_transfer.data.image_folder import ImageFolderDataModule
from lit_transfer.data.masks import MaskError, load_mask
from lit_transfer.data.pipeline import finalize_pipeline, load_pipeline
from lit_transfer.data.preprocessing import DataConfig, resolve_preprocessing
from lit_transfer.data.resize import AntialiasedRandomResizedCrop, EvalResizeCrop
from lit_transfer.data.samplers import BalancedSampler, EpochSampler
from lit_transfer.data.segmentation import SegmentationCSVDataModule, SegmentationFolderDataModule
from lit_transfer.data.segmentation_dataset import SegmentationDataset
from lit_transfer.data.transforms import PRESETS, build_eval_transform, build_train_transform
from lit_transfer.data.workers import seed_worker

__all__ = [
    "PRESETS",
    "AntialiasedRandomResizedCrop",
    "ArrayDataset",
    "BadImageError",
    "BalancedSampler",
    "BaseImageDataModule",
    "CSVDataModule",
    "DataConfig",
    "DigitsDataModule",
    "EpochSampler",
    "EvalResizeCrop",
    "FileImageDataModule",
    "ImageDataset",
    "ImageFolderDataModule",
    "MaskError",
    "SegmentationCSVDataModule",
    "SegmentationDataset",
    "SegmentationFolderDataModule",
    "build_eval_transform",
    "build_train_transform",
    "finalize_pipeline",
    "load_image",
    "load_mask",
    "load_pipeline",
    "resolve_preprocessing",
    "scan_images",
    "seed_worker",
]
