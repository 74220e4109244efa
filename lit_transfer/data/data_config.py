"""Former name of :mod:`lit_transfer.data.preprocessing`, kept so that existing imports keep working.

Import from :mod:`lit_transfer.data.preprocessing` (or :mod:`lit_transfer.data`) instead. ``resolve_data_config``
is now :func:`~lit_transfer.data.preprocessing.resolve_preprocessing`: the old name shadowed timm's
``timm.data.resolve_data_config``, which takes other arguments; calling it warns with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from lit_transfer.data.preprocessing import (
    INTERPOLATIONS,
    MIN_IMAGE_SIZE,
    DataConfig,
    describe_preprocessing,
    resolve_preprocessing,
    same_preprocessing,
)

__all__ = [
    "INTERPOLATIONS",
    "MIN_IMAGE_SIZE",
    "DataConfig",
    "describe_preprocessing",
    "resolve_data_config",
    "resolve_preprocessing",
    "same_preprocessing",
]


def resolve_data_config(
    data_config: Mapping[str, Any] | None = None, image_size: int | None = None, in_chans: int = 3
) -> DataConfig:
    """Deprecated name of :func:`~lit_transfer.data.preprocessing.resolve_preprocessing` (same arguments).

    Warns:
        DeprecationWarning: On every call; the name will be removed.
    """
    warnings.warn(
        "`lit_transfer.data.resolve_data_config` is renamed `resolve_preprocessing` (same arguments); the old name,"
        " which shadowed timm's `timm.data.resolve_data_config`, will be removed.",
        DeprecationWarning,
        stacklevel=2,
    )
    return resolve_preprocessing(data_config, image_size, in_chans)
