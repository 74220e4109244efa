"""Exceptions raised by lit_transfer, and the argument checks every module shares.

Every error names the argument, file or setting at fault and how to fix it. The classes derive from the
built-in exception a user would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing
files), so ``except ValueError`` keeps working. :func:`is_int` and :func:`is_number` are the one definition of
"an integer" and "a number" for arguments (``True``/``False`` are neither); :func:`check_positive_int` the one
check of a count.
"""

from __future__ import annotations

import re
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer argument: an ``int`` that is not a ``bool``.

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a numeric argument: an ``int`` or ``float`` that is not a ``bool``.

    Example:
        >>> is_number(0.5), is_number(2), is_number(False), is_number("1")
        (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise a ``ValueError`` naming ``name`` and the value.

    Example:
        >>> check_positive_int("every_n_epochs", 0)
        Traceback (most recent call last):
        ...
        ValueError: `every_n_epochs` must be a positive integer, got 0.
    """
    if not is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


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
