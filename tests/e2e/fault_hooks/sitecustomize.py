"""Fault injection for the fault-matrix tests, loaded by Python at start-up when this folder is on ``PYTHONPATH``.

It changes nothing unless one of these variables is set in the child's environment:

* ``LT_FAULT_PAUSE_REPLACE=<file name>:<n>``: before the ``n``-th ``os.replace`` onto a file of that name, print
  ``FAULT: replacing <target>`` to stderr and sleep, so the test can ``kill -9`` the process exactly there (the new
  checkpoint complete in its temporary file, the old one still in place).
* ``LT_FAULT_FILL_AFTER_REPLACE=<file name>:<n>:<bytes left>``: right after the ``n``-th ``os.replace`` onto a file of
  that name, fill the target's filesystem until only ``<bytes left>`` remain (a disk that fills up during a run).
"""

import os
import sys
import time

_real_replace = os.replace
_counts: dict[str, int] = {}


def _parse(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return value.split(":") if value else None


def _fill(folder: str, leave: int) -> None:
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(os.path.join(folder, "filler.bin"), "ab") as handle:
        remaining = max(0, free - leave)
        chunk = b"\0" * 65536
        while remaining > 0:
            remaining -= handle.write(chunk[: min(len(chunk), remaining)])


def _replace(src, dst, *args, **kwargs):
    name = os.path.basename(os.fspath(dst))
    _counts[name] = _counts.get(name, 0) + 1
    pause = _parse("LT_FAULT_PAUSE_REPLACE")
    if pause and pause[0] == name and _counts[name] == int(pause[1]):
        print(f"FAULT: replacing {os.fspath(dst)}", file=sys.stderr, flush=True)
        time.sleep(600)
    result = _real_replace(src, dst, *args, **kwargs)
    fill = _parse("LT_FAULT_FILL_AFTER_REPLACE")
    if fill and fill[0] == name and _counts[name] == int(fill[1]):
        root = os.path.dirname(os.fspath(dst))
        while os.path.ismount(root) is False and os.path.dirname(root) != root:
            root = os.path.dirname(root)
        _fill(root, int(fill[2]))
        print(f"FAULT: filled the disk of {os.fspath(dst)}", file=sys.stderr, flush=True)
    return result


os.replace = _replace
