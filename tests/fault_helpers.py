"""Shared pieces of the fault tests: a real tmpfs mount (a full disk, a ``$TMPDIR`` on another filesystem)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here, or ``None`` when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``"4m"``) at ``path`` for the block; skip the test where that is not permitted."""
    reason = _can_mount()
    if reason is not None:
        pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` until about ``leave`` bytes are free; return the filler file."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with filler.open("wb") as handle:
        chunk = b"\0" * 65536
        remaining = max(0, free - leave)
        while remaining > 0:
            written = handle.write(chunk[: min(len(chunk), remaining)])
            remaining -= written
    return filler
