"""Atomic file writes: a file appears under its final name complete, or not at all.

Every file the package writes for a user (checkpoints, exports, predictions, the run report) goes through
:func:`atomic_path`: the content is written to a hidden temporary file *in the target's own folder*, flushed and
``fsync``-ed, then renamed over the target with :func:`os.replace` (atomic within one filesystem on POSIX), and the
folder is ``fsync``-ed so the rename itself survives a power cut. Writing next to the target matters: a temporary
file in ``$TMPDIR`` (often a tmpfs on clusters) would have to be *copied* onto the target's filesystem, and a copy
that is cut short leaves a cut-short file under the final name.

If anything fails while writing (a full disk, an exception, Ctrl-C) the temporary file is removed and the previous
file under the target name is untouched. A process killed with ``SIGKILL`` cannot clean up; its temporary file is
named ``.<name>.tmp.<host>.<pid>.<token>`` and :func:`remove_stale_temp_files` removes such files of processes of
this host that no longer run; :func:`atomic_path` calls it for each folder it first writes into.

A write that fails for lack of space or permission raises :class:`~lit_transfer.errors.FileWriteError` naming the
file, what is free on its filesystem and that the previous file is kept.

Example:
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_open(target, "w") as handle:
    ...     _ = handle.write("a,b")
    >>> target.read_text()
    'a,b'
    >>> sorted(p.name for p in target.parent.iterdir())  # no temporary file left
    ['table.csv']
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lit_transfer.errors import FileWriteError

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "fsync_dir",
    "remove_stale_temp_files",
    "temp_name",
]

_TEMP_MARK = ".tmp."
_SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_ACCESS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}
_CLEANED: set[str] = set()


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def temp_name(target: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary file next to ``target``: ``.<name>.tmp.<host>.<pid>.<token><suffix>`` in the same folder.

    Args:
        target: The final file.
        suffix: Appended to the temporary name, for writers that pick the format from it (``".png"``).

    Example:
        >>> name = temp_name("/runs/last.ckpt").name
        >>> name.startswith(".last.ckpt.tmp.") and name.count(".") >= 5
        True
    """
    path = Path(target)
    return path.with_name(f".{path.name}{_TEMP_MARK}{_host()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (network, FUSE) refuse fsync on a folder: the rename still happened
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_bytes(folder: Path) -> str:
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return str(free)  # unreachable


def _write_error(target: Path, err: OSError) -> OSError:
    """A clear error for a failed write, or ``err`` itself when it is not about space or permission."""
    kept = " The previous file under that name is kept." if target.exists() else ""
    if err.errno in _SPACE_ERRORS:
        return FileWriteError(
            err.errno,
            f"Could not write {str(target)!r}: no space left on its filesystem ({_free_bytes(target.parent)} free)."
            f"{kept} Free some space (or point the output to another disk) and run the command again.",
        )
    if err.errno in _ACCESS_ERRORS:
        return FileWriteError(
            err.errno,
            f"Could not write {str(target)!r}: {err.strerror or 'permission denied'}.{kept} Choose a folder you can"
            " write to (for a run: `--trainer.default_root_dir`).",
        )
    return err


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; when the block ends without error, it becomes ``target``.

    The block writes the whole file to the yielded path (with any writer that takes a path). Then the file is
    ``fsync``-ed, renamed over ``target`` with :func:`os.replace`, and the folder ``fsync``-ed. On any exception
    (``KeyboardInterrupt`` included) the temporary file is removed and ``target`` is left as it was. The folder is
    created when missing.

    Args:
        target: The final file.
        suffix: Appended to the temporary file's name (``".png"`` for writers that read the format from it).

    Raises:
        FileWriteError: No space or no permission to write (the message names ``target``; the old file is kept).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(target, err) from err
    folder = os.path.realpath(target.parent)
    if folder not in _CLEANED:  # once per folder and process: what writers killed with SIGKILL left here
        _CLEANED.add(folder)
        remove_stale_temp_files(folder)
    temp = temp_name(target, suffix)
    try:
        yield temp
        if not temp.exists():
            raise FileNotFoundError(f"The writer of {str(target)!r} wrote nothing to its temporary file {temp}.")
        _fsync_file(temp)
        os.replace(temp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            temp.unlink()
        clear = _write_error(target, err)
        if clear is err:
            raise
        # The clear message is the one to report: the bare errno keeps no traceback of its own (the message names
        # the file and the errno), so the CLI's search for the innermost deliberate error finds this one.
        raise clear from err.with_traceback(None)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """:func:`open` for writing, atomically: the file appears under ``target`` complete when the block ends.

    Args:
        target: The final file.
        mode: ``"w"``, ``"wb"``, ``"wt"`` (write modes only).
        **kwargs: Passed to :func:`open` (``newline``, ``encoding``).
    """
    if not mode.startswith("w"):
        raise ValueError(f"`mode` must be a write mode ('w', 'wb', 'wt'), got {mode!r}.")
    with atomic_path(target) as temp, open(temp, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def atomic_write_bytes(target: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``target`` atomically; return ``target`` as a :class:`~pathlib.Path`."""
    with atomic_open(target, "wb") as handle:
        handle.write(data)
    return Path(target)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of this host left in ``folder``; return what was removed.

    Only files named by :func:`temp_name` whose host is this host and whose process no longer runs are removed: a
    write in progress (this process or another) is never touched, and neither is a file of another machine sharing
    the folder.
    """
    removed: list[Path] = []
    host = _host()
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        name = str(entry.name)
        if not name.startswith(".") or _TEMP_MARK not in name or not entry.is_file(follow_symlinks=False):
            continue
        parts = name.rsplit(_TEMP_MARK, 1)[1].split(".")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed
