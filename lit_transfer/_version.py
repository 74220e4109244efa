"""The installed distribution's version: pyproject.toml's, read back from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("lit-transfer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
