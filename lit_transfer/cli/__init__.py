"""The ``lit-transfer`` command line: a LightningCLI with the package's classes, links, defaults and subcommands."""

from lit_transfer.cli.app import TransferCLI, main

__all__ = ["TransferCLI", "main"]
