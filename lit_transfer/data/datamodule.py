"""Former home of ``ImageFolderDataModule`` and ``CSVDataModule``, kept so that old imports keep working.

Saved configs with ``class_path: lit_transfer.data.datamodule.ImageFolderDataModule`` load as before.

The classes live in :mod:`lit_transfer.data.image_folder` and :mod:`lit_transfer.data.csv_table`; import them from
:mod:`lit_transfer.data`.
"""

from lit_transfer.data.csv_table import CSVDataModule
from lit_transfer.data.image_folder import ImageFolderDataModule

__all__ = ["CSVDataModule", "ImageFolderDataModule"]
