"""Safe file IO: atomic writes, the atomic checkpoint plugin, and checks that name a broken checkpoint or weights file.

Every file the package writes for a user goes through :mod:`lit_transfer.files.atomic`; every checkpoint or weights
file it reads is checked first by :mod:`lit_transfer.files.checks`; :class:`AtomicCheckpointIO` is Lightning's
checkpoint plugin on top of both.
"""

from lit_transfer.files.checkpoint_io import AtomicCheckpointIO

__all__ = ["AtomicCheckpointIO"]
