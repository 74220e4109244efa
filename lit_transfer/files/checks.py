"""Reading checkpoint and weights files safely, with one clear line for a file that is broken.

A checkpoint or weights file can be empty (a disk that filled up), cut short (a copy or a write that was
interrupted) or not what its name says (random bytes, an HTML error page saved as ``.ckpt``). ``torch.load`` answers
those with ``EOFError``, ``IndexError``, ``PytorchStreamReader failed reading zip archive`` or, for bytes that happen
to start like a pickle, an ``UnpicklingError`` that calls them "pickled objects" and advises ``weights_only=False``.
:func:`torch_file_problem` and :func:`safetensors_problem` look at the file first, cheaply (its size, its zip
directory and the small ``data.pkl`` record inside it; a safetensors header), and :func:`load_torch_file` /
:func:`load_safetensors_file` turn whatever is still wrong into a :class:`~lit_transfer.errors.CorruptFileError`
naming the file and what is wrong. Files are only ever read with ``weights_only=True`` (no code runs); a file that
needs more is refused with :class:`~lit_transfer.errors.UnsafeFileError`.

Example:
    >>> import pathlib, tempfile
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / "last.ckpt"
    >>> _ = empty.write_bytes(b"")
    >>> torch_file_problem(empty)
    'is empty (0 bytes)'
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lit_transfer.errors import CorruptFileError, UnsafeFileError

__all__ = [
    "check_weights_file",
    "checkpoint_problem",
    "load_safetensors_file",
    "load_torch_file",
    "safetensors_problem",
    "torch_file_problem",
]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"
_CUT_SHORT = "it was probably being written or copied when that stopped"


def _size(path: Path) -> int:
    return path.stat().st_size


def torch_file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a file ``torch.save`` should have written, or ``None`` when it looks whole.

    Cheap: reads the first bytes, the zip directory at the end, and the small ``data.pkl`` record (its checksum is
    verified); tensor data is not read.

    Args:
        path: An existing file.

    Returns:
        A phrase that completes "the file ..." (``"is empty (0 bytes)"``), or ``None``.
    """
    path = Path(path)
    size = _size(path)
    if size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                records = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
                if not records:
                    return "is a zip archive but not a PyTorch file (it holds no data.pkl record)"
                archive.read(records[0])  # verifies the record's CRC
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as err:
            return f"is cut short or damaged ({size} bytes; its zip directory cannot be read: {err}); {_CUT_SHORT}"
        return None
    if head.startswith(_PICKLE_PROTOCOL) and len(head) > 1 and 2 <= head[1] <= 5:
        return None  # the legacy (pre-zip) format or a plain pickle: torch.load decides, weights only
    shown = " ".join(f"{b:02x}" for b in head[:8])
    return (
        f"is not a PyTorch checkpoint or weights file ({size} bytes starting with {shown}; a file written by"
        " torch.save starts with a zip header, 50 4b 03 04)"
    )


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a ``.safetensors`` file, or ``None`` when its header and length agree.

    Reads the 8-byte header length and the JSON header only.
    """
    path = Path(path)
    size = _size(path)
    if size == 0:
        return "is empty (0 bytes)"
    if size < 8:
        return f"is cut short ({size} bytes; a safetensors file starts with an 8-byte header length)"
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > size - 8:
            return (
                f"is cut short or not a safetensors file (its header length says {length} bytes, the whole file has"
                f" {size}); {_CUT_SHORT}"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw)
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, AttributeError):
        return "is not a safetensors file (its header is not the JSON a safetensors file starts with)"
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"is cut short (its tensors need {needed} bytes, the file has {size}); {_CUT_SHORT}"
    return None


def _corrupt(path: Path, what: str, problem: str, hint: str) -> CorruptFileError:
    return CorruptFileError(f"The {what} {str(path)!r} {problem}. {hint}".strip())


def _unpickler_reason(err: BaseException) -> str:
    """The weights-only unpickler's own reason (``Unsupported operand 7``), without torch's advice around it."""
    text = str(err)
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return lines[0] if lines and "weights_only" not in lines[0] else type(err).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class _Broken(Exception):
    """A file's problem, as a phrase that completes "the file ..."."""


def _read_torch(path: Path, mmap: bool, kwargs: dict[str, Any]) -> Any:
    problem = torch_file_problem(path)
    if problem is not None:
        raise _Broken(problem)
    kwargs.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, mmap=mmap and _is_zip(path), **kwargs)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise UnsafeFileError.for_file(path, err) from None
        raise _Broken(f"is not a PyTorch file: its bytes do not unpickle ({_unpickler_reason(err)})") from None
    except (EOFError, RuntimeError, IndexError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise _Broken(f"cannot be read ({_first_line(err)}); {_CUT_SHORT}") from None


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", hint: str = "", mmap: bool = False, **kwargs: Any
) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")``, with one clear error for a broken file.

    Args:
        path: The file.
        what: What the file is, for the message (``"checkpoint"``, ``"weights file"``).
        hint: The fix, appended to the message (e.g. which other file to use).
        mmap: Map the file instead of reading it (tensors are read lazily: a cheap look at a large checkpoint).
        **kwargs: Passed to :func:`torch.load`.

    Raises:
        CorruptFileError: The file is empty, cut short, or not a PyTorch file.
        UnsafeFileError: The file holds pickled objects that a weights-only load refuses.
    """
    path = Path(path)
    try:
        return _read_torch(path, mmap, dict(kwargs))
    except _Broken as broken:
        raise _corrupt(path, what, str(broken), hint) from None


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == _ZIP_MAGIC


def load_safetensors_file(path: str | os.PathLike, what: str = "weights file", hint: str = "") -> dict[str, Any]:
    """``safetensors.torch.load_file(path)``, with one clear error for a broken file.

    Raises:
        CorruptFileError: The file is empty, cut short, or its header is not a safetensors header.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    problem = safetensors_problem(path)
    if problem is not None:
        raise _corrupt(path, what, problem, hint)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, what, f"cannot be read ({_first_line(err)})", hint) from None


_WEIGHTS_HINT = (
    "Copy or download the file again, pass another weights file, `pretrained: true` for the hub weights, or `false`."
)


def check_weights_file(path: str | os.PathLike, hint: str = _WEIGHTS_HINT) -> None:
    """Refuse a weights file (``pretrained``) that is empty, cut short or random bytes, before anything reads it.

    A zip-format PyTorch file or a safetensors file is checked cheaply (its directory or header); a legacy pickle-format
    file is loaded weights-only once (timm's ``argparse.Namespace`` allowed), so random bytes that happen to start like
    a pickle are called broken, not "pickled objects". A file that does need unpickling is left to the caller's
    :class:`~lit_transfer.errors.UnsafeFileError`.

    Raises:
        CorruptFileError: Naming the file, what is wrong with it, and ``hint``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        problem = safetensors_problem(path)
    else:
        problem = torch_file_problem(path)
        if problem is None and not _is_zip(path):
            try:
                with torch.serialization.safe_globals([argparse.Namespace]):
                    _read_torch(path, False, {})
            except _Broken as broken:
                problem = str(broken)
            except UnsafeFileError:
                return
    if problem is not None:
        raise _corrupt(path, "weights file", problem, hint)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a Lightning checkpoint, or ``None`` when it loads (weights only, memory-mapped: cheap).

    Example:
        >>> import pathlib, tempfile, torch
        >>> good = pathlib.Path(tempfile.mkdtemp()) / "last.ckpt"
        >>> torch.save({"epoch": 0, "state_dict": {"w": torch.zeros(2)}}, good)
        >>> checkpoint_problem(good) is None
        True
        >>> _ = good.write_bytes(good.read_bytes()[:100])
        >>> checkpoint_problem(good).startswith("is cut short")
        True
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist"
    try:
        checkpoint = _read_torch(path, True, {})
    except _Broken as broken:
        return str(broken)
    except UnsafeFileError:
        return "holds pickled Python objects that a safe (weights-only) load refuses"
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return f"is not a Lightning checkpoint (it holds a {type(checkpoint).__name__} without a 'state_dict')"
    return None
