"""Work on a module or the generators without leaving a trace: one owner of "save, do, restore".

* :func:`kept_training_state`: every parameter's ``requires_grad`` and every submodule's train/eval mode are put
  back on exit (AutoFreeze's trials, an LR range test that stops in the first freezing phase).
* :func:`seeded_rng`: Lightning's :func:`~lightning.pytorch.utilities.seed.isolate_rng` around a fixed seed, so a
  side computation draws the same numbers every time and the run's own streams continue where they were.
* :func:`set_frozen_modes`: eval mode for the sub-trees whose parameters are all frozen, train mode elsewhere
  (:func:`frozen_modes` lists those modes once, :func:`apply_modes` sets them again).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["apply_modes", "frozen_modes", "kept_training_state", "seeded_rng", "set_frozen_modes", "subtrees_within"]


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


def set_frozen_modes(module: nn.Module, frozen: set[int], train_bn: bool = False) -> None:
    """Eval mode for sub-trees whose parameters are all in ``frozen`` (ids), train mode elsewhere.

    BatchNorm, dropout and drop-path inside a frozen sub-tree then behave as at inference; a module without
    parameters follows its parent. ``train_bn`` keeps every BatchNorm layer in train mode (fastai's choice).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Linear(2, 2))
        >>> set_frozen_modes(net, {id(p) for p in net[0].parameters()})
        >>> [m.training for m in net]
        [False, True, True]
    """
    apply_modes(frozen_modes(module, frozen, train_bn))


def frozen_modes(module: nn.Module, frozen: set[int], train_bn: bool = False) -> list[tuple[nn.Module, bool]]:
    """Every sub-module with the mode :func:`set_frozen_modes` gives it, to set again by :func:`apply_modes`.

    Walking a deep model's tree costs milliseconds; a caller that sets the same modes at every epoch (a freezing
    phase lasts several) walks it once per phase and keeps this list.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Linear(2, 2))
        >>> [training for _, training in frozen_modes(net, {id(p) for p in net[0].parameters()})]  # net, 0, 1, 2
        [True, False, True, True]
    """
    frozen_below = subtrees_within(module, frozen)
    by_name: dict[str, bool] = {}
    modes: list[tuple[nn.Module, bool]] = []
    for name, sub in module.named_modules():
        below = frozen_below[id(sub)]
        if below is not None:
            training = not below
            if isinstance(sub, _BatchNorm) and train_bn:
                training = True
        else:
            training = by_name.get(name.rpartition(".")[0], True)
        by_name[name] = training
        modes.append((sub, training))
    return modes


def apply_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Set each listed sub-module's ``training`` flag (a list from :func:`frozen_modes`)."""
    for sub, training in modes:
        if sub.training != training:  # reading is cheap; nn.Module's attribute setter is not
            sub.training = training


def subtrees_within(module: nn.Module, frozen: set[int]) -> dict[int, bool | None]:
    """For every sub-module (by id): whether all the parameters of its sub-tree are in ``frozen`` (None: it has none).

    One pass from the leaves up, instead of listing each sub-module's parameters again at every level.
    """
    result: dict[int, bool | None] = {}

    def visit(sub: nn.Module) -> tuple[bool, bool]:  # (has parameters, all frozen) of the sub-tree
        has_any, all_frozen = False, True
        for p in sub.parameters(recurse=False):
            has_any, all_frozen = True, all_frozen and id(p) in frozen
        for child in sub.children():
            child_any, child_frozen = visit(child)
            has_any, all_frozen = has_any or child_any, all_frozen and child_frozen
        result[id(sub)] = all_frozen if has_any else None
        return has_any, all_frozen

    visit(module)
    return result
