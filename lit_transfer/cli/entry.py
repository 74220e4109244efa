"""The ``lit-transfer`` command's entry point: ``--version`` and ``recipes`` answer without importing Lightning.

Everything else goes to :func:`lit_transfer.cli.app.run_command`, the LightningCLI. Keeping this module's imports
light is what makes ``lit-transfer --version`` and ``lit-transfer recipes`` instant.
"""

from __future__ import annotations

import os
import select
import sys
from typing import Any

from lit_transfer._version import VERSION_LINE
from lit_transfer.cli.recipes import recipes_command

__all__ = ["main"]


def main(args: Any = None, **kwargs: Any) -> None:
    """Entry point of the ``lit-transfer`` command and ``python -m lit_transfer``.

    Returns nothing, so the console script exits with status 0 on success. A user's mistake (a parse error, an
    error raised by the package's own checks, a Lightning misconfiguration) ends with its message as the last
    thing printed and exit status 2; any other error propagates with its traceback (status 1).
    ``LIT_TRANSFER_TRACEBACK=1`` shows the traceback of a mistake too. A command stopped by SIGTERM or SIGINT exits
    with ``128 + signal`` (143, 130) after saving what it can, and says how to resume
    (:mod:`lit_transfer.cli.interrupts`). Output piped into a reader that closes early (``| head``) ends quietly
    with status 141, as ``cat`` does.

    For programmatic use, build :class:`~lit_transfer.TransferCLI` directly:
    ``cli = TransferCLI(args=[...], run=False)``.

    Args:
        args: Arguments instead of ``sys.argv[1:]`` (a list of strings or a dict).
        **kwargs: Passed to :class:`~lit_transfer.TransferCLI`.

    Raises:
        SystemExit: With status 2 after printing a user's mistake, ``128 + signal`` after a stop signal.
    """
    try:
        return _dispatch(args, **kwargs)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # The reader of the output went away (`lit-transfer recipes | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        raise SystemExit(141) from None  # 128 + SIGPIPE, the status a shell shows for `cat` here


def _dispatch(args: Any, **kwargs: Any) -> None:
    """``recipes`` and ``--version`` here; a Trainer subcommand (or any other line) to the LightningCLI."""
    argv = sys.argv[1:] if args is None else args
    words = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else None
    if words is not None and words[:1] == ["recipes"]:  # not a Trainer subcommand
        return recipes_command(words[1:])
    if words == ["--version"]:  # what the parser's own --version prints, without building it
        print(VERSION_LINE)
        return None
    from lit_transfer.cli.app import run_command  # imports Lightning, timm and torch

    return run_command(args, **kwargs)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reading end is closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows), or no real stdout
        return False
