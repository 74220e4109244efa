"""Exceptions raised by lit_transfer.

Every error names the argument, file or setting at fault and how to fix it. The classes derive from the
built-in exception a user would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing
files), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be found locally and cannot be downloaded."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the backbone it is loaded into."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for a different model layout than the one being resumed."""


class UnsafeFileError(ValueError):
    """A file holds pickled objects that a safe load (``weights_only=True``) refuses."""
