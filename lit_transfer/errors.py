"""Exceptions raised by lit_transfer, and the argument checks every module shares.

Every error names the argument, file or setting at fault and how to fix it. The classes derive from the
built-in exception a user would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing
files), so ``except ValueError`` keeps working. :func:`is_int` and :func:`is_number` are the one definition of
"an integer" and "a number" for arguments (``True``/``False`` are neither); :func:`check_int` the one check of
an integer argument and its bounds (:func:`check_positive_int` that of a count).
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard


def is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an integer argument: an ``int`` that is not a ``bool``.

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is a numeric argument: an ``int`` or ``float`` that is not a ``bool``.

    Example:
        >>> is_number(0.5), is_number(2), is_number(False), is_number("1")
        (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None, expected: str | None = None
) -> int:
    """Return ``value`` if it is an integer in ``minimum..maximum`` (a bound left ``None`` is open), else raise.

    Args:
        name: The argument's name, as the user writes it.
        value: The value to check (``True``/``False`` are not integers, see :func:`is_int`).
        minimum: The smallest value allowed, or ``None``.
        maximum: The largest value allowed, or ``None``.
        expected: What the message says ``value`` must be; by default it is read from the bounds ("a positive
            integer" for ``minimum=1``, "a non-negative integer" for ``minimum=0``, "an integer >= 16", ...).

    Returns:
        ``value`` as an ``int``.

    Raises:
        ValueError: ``"`name` must be <expected>, got <value!r>."``

    Example:
        >>> check_int("overlays", 4, minimum=0)
        4
        >>> check_int("overlays", True, minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: `overlays` must be a non-negative integer, got True.
        >>> check_int("decoder_channels", 8, minimum=16)
        Traceback (most recent call last):
        ...
        ValueError: `decoder_channels` must be an integer >= 16, got 8.
        >>> check_int("ignore_index", 70000, 0, 65535, expected="an integer in 0..65535 (255 by default)")
        Traceback (most recent call last):
        ...
        ValueError: `ignore_index` must be an integer in 0..65535 (255 by default), got 70000.
    """
    if is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if expected is None:
        expected = _int_bounds(minimum, maximum)
    raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def _int_bounds(minimum: int | None, maximum: int | None) -> str:
    """The words for an integer in ``minimum..maximum``."""
    if maximum is None:
        words = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}
        return words.get(minimum, f"an integer >= {minimum}")
    return f"an integer <= {maximum}" if minimum is None else f"an integer in {minimum}..{maximum}"


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise a ``ValueError`` naming ``name`` and the value.

    Example:
        >>> check_positive_int("every_n_epochs", 0)
        Traceback (most recent call last):
        ...
        ValueError: `every_n_epochs` must be a positive integer, got 0.
    """
    return check_int(name, value, minimum=1)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be found locally and cannot be downloaded."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the backbone it is loaded into."""


class DataMismatchError(ValueError):
    """A DataModule does not fit the model it is given to (input size, task, classes, outputs, augmentation).

    Raised by :meth:`~lit_transfer.models.base.TransferModule.check_datamodule`, before any step. ``lit-transfer
    tune`` counts a trial refused this way as one failed trial and goes on with the search.
    """


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
