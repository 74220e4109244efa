"""Work on a module or the generators without leaving a trace: one owner of "save, do, restore".

* :func:`kept_training_state`: every parameter's ``requires_grad`` and every submodule's train/eval mode are put
  back on exit (a measurement in eval mode, an LR range test that stops in the first freezing phase).
* :func:`seeded_rng`: Lightning's :func:`~lightning.pytorch.utilities.seed.isolate_rng` around a fixed seed, so a
  side computation draws the same numbers every time and the run's own streams continue where they were.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

__all__ = ["kept_training_state", "seeded_rng"]


@contextmanager
def kept_training_state(module: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` and every submodule's ``training`` flag on exit.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> with kept_training_state(net):
        ...     _ = net.eval()
        ...     _ = net[0].weight.requires_grad_(False)
        >>> net[1].training, net[0].weight.requires_grad
        (True, True)
    """
    flags = [(param, param.requires_grad) for param in module.parameters()]
    modes = [(sub, sub.training) for sub in module.modules()]
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for sub, mode in modes:
            sub.training = mode


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch's (CPU, and CUDA once initialised), NumPy's and Python's generators inside; restore them on exit.

    CUDA is neither initialised nor seeded when no CUDA context exists yet (a CPU run stays CPU-only).

    Example:
        >>> _ = torch.manual_seed(1)
        >>> expected = torch.rand(1)
        >>> _ = torch.manual_seed(1)
        >>> with seeded_rng(0):
        ...     _ = torch.rand(100)  # draws inside
        >>> torch.equal(torch.rand(1), expected)  # the outer stream continues where it was
        True
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with isolate_rng(include_cuda=cuda):
        torch.random.default_generator.manual_seed(seed)  # not torch.manual_seed: it queues seeds for CUDA's init
        if cuda:
            torch.cuda.manual_seed_all(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
