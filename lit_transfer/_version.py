"""The installed distribution's version: pyproject.toml's, read back from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION_LINE", "__version__"]

try:
    __version__ = version("lit-transfer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

VERSION_LINE = f"lit-transfer {__version__}"
"""What ``lit-transfer --version`` prints."""
