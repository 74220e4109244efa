"""Exceptions raised by lit_transfer.

Every error names the argument, file or setting at fault and how to fix it. The classes derive from the
built-in exception a user would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing
files), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import re


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be found locally and cannot be downloaded."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the backbone it is loaded into."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for a different model layout than the one being resumed."""


class UnsafeFileError(ValueError):
    """A file holds pickled objects that a safe load (``weights_only=True``) refuses."""

    @classmethod
    def for_file(cls, path: object, reason: BaseException) -> UnsafeFileError:
        """The error for ``path``, with the refused load's first line and the safe way to proceed."""
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(reason))
        detail = f"it needs {found.group(1)}" if found else type(reason).__name__
        return cls(
            f"{str(path)!r} holds pickled Python objects that a safe load refuses ({detail}). It was not loaded:"
            " unpickling can run arbitrary code. If you trust its source, convert it once to safetensors:"
            " `sd = torch.load(path, weights_only=False)['state_dict']; safetensors.torch.save_file(sd,"
            " 'weights.safetensors')`, then pass the .safetensors file as `pretrained`."
        )


class CorruptFileError(ValueError):
    """A checkpoint or weights file is empty, cut short or not the format its name says (it is never unpickled)."""


class FileWriteError(OSError):
    """A file could not be written (no space, no permission); the message names the file and that the old one is kept.

    An :class:`OSError` with the ``errno`` of the failed write, so ``except OSError`` keeps working.
    """

    def __str__(self) -> str:
        return str(self.strerror)
