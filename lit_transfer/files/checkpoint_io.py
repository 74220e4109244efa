"""``AtomicCheckpointIO``: Lightning checkpoints written atomically on any local filesystem, read with clear errors.

Lightning's ``TorchCheckpointIO`` writes a checkpoint through an fsspec transaction whose temporary file lives in
``$TMPDIR``; when ``$TMPDIR`` is on another filesystem than the run (a tmpfs, as on most clusters) the final move is
a copy, and a copy cut short by a kill or a full disk leaves a broken ``last.ckpt`` in place of the good one. This
plugin writes local checkpoints with :func:`lit_transfer.files.atomic.atomic_path` instead (a temporary file next to the
target, ``fsync``, ``os.replace``), so a checkpoint file is always either the previous complete one or the new
complete one. Remote paths (``s3://``, ``gs://``, any fsspec protocol but ``file``) keep Lightning's behaviour.

Loading goes through :func:`lit_transfer.files.checks.load_torch_file` for local files: an empty, cut-short or
random file raises :class:`~lit_transfer.errors.CorruptFileError` naming the file, instead of a bare ``EOFError``.

The ``lit-transfer`` command installs it unless a ``CheckpointIO`` plugin is configured; the package's
:class:`~lit_transfer.callbacks.ExceptionCheckpoint` installs it too when the Trainer has Lightning's default
(:func:`use_atomic_checkpoint_io`), so a plain ``Trainer`` with that callback gets atomic checkpoints as well.

Example::

    trainer = Trainer(plugins=[AtomicCheckpointIO()])
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lit_transfer.files.atomic import atomic_path
from lit_transfer.files.checks import load_torch_file

__all__ = ["AtomicCheckpointIO", "is_local_path", "use_atomic_checkpoint_io"]


def is_local_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on a local filesystem (a plain path or ``file://``), not an fsspec remote URL.

    Example:
        >>> is_local_path("runs/last.ckpt"), is_local_path("s3://bucket/last.ckpt")
        (True, False)
    """
    text = os.fspath(path)
    return "://" not in text or text.startswith("file://")


def _local(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    return Path(text.removeprefix("file://"))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and whose local loads name a broken file.

    See the module docstring. Serialises into memory first (as Lightning does), so a full disk fails in a plain
    ``write`` with an :class:`OSError` (reported as :class:`~lit_transfer.errors.FileWriteError`), never inside
    torch's C++ writer.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not is_local_path(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by AtomicCheckpointIO for local"
                f" paths, got {storage_options!r}."
            )
        target = _local(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(target) as temp, temp.open("wb") as handle:
            handle.write(buffer.getbuffer())

    @override
    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        if not is_local_path(path) or weights_only is False:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        target = _local(path)
        if not get_filesystem(str(target)).exists(str(target)):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_torch_file(target, map_location=map_location or "cpu")


def use_atomic_checkpoint_io(trainer: Trainer) -> bool:
    """Give ``trainer``'s strategy an :class:`AtomicCheckpointIO` when it has Lightning's default ``TorchCheckpointIO``.

    A ``CheckpointIO`` of another kind (async, a cloud plugin, a strategy's own) is kept.

    Returns:
        Whether the plugin was installed.
    """
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is not None and type(current) is not TorchCheckpointIO:
        return False
    try:
        strategy.checkpoint_io = AtomicCheckpointIO()
    except (AttributeError, TypeError):  # a strategy without a settable CheckpointIO (DeepSpeed saves itself)
        return False
    return True
