"""Former name of :mod:`lit_transfer.data.file_base`, kept so that existing imports keep working."""

from lit_transfer.data.file_base import FileImageDataModule, Files, Split, check_classes, check_dir

__all__ = ["FileImageDataModule", "Files", "Split", "check_classes", "check_dir"]
