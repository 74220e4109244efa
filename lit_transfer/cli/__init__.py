"""The ``lit-transfer`` command line: a LightningCLI with the package's classes, links, defaults and subcommands.

``TransferCLI`` is imported on first use, so ``lit-transfer --version`` and ``lit-transfer recipes`` start without
Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lit_transfer.cli.entry import main

if TYPE_CHECKING:
    from lit_transfer.cli.app import TransferCLI

__all__ = ["TransferCLI", "main"]


def __getattr__(name: str) -> Any:
    if name == "TransferCLI":
        from lit_transfer.cli.app import TransferCLI

        return TransferCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
