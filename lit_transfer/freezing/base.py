"""The freezing-policy interface: which layer groups train at which epoch.

A policy is a pure function of the epoch: it answers which layer groups are trainable in that epoch
(:meth:`~FreezingPolicy.trainable_mask`; most policies train a number of groups counted from the head,
:meth:`~FreezingPolicy.trainable_depth`). It knows nothing about Trainers or optimizers;
:class:`~lit_transfer.callbacks.LayerFreezing` applies it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from lit_transfer.errors import check_int

__all__ = ["FreezingPolicy", "check_epoch", "head_only", "mask_depth"]


class FreezingPolicy(ABC):
    """Base class of freezing policies.

    Args:
        train_bn: Keep BatchNorm layers of frozen groups trainable (affine parameters get gradients, running
            statistics update), as fastai does. By default BatchNorm in frozen groups runs in eval mode with
            frozen affine parameters and frozen running statistics.
    """

    name: str = ""

    def __init__(self, train_bn: bool = False) -> None:
        self.train_bn = bool(train_bn)

    @abstractmethod
    def trainable_depth(self, epoch: int, num_groups: int) -> int:
        """Number of trainable layer groups, counted from the head, in ``epoch``.

        Args:
            epoch: Zero-based training epoch.
            num_groups: Total number of layer groups of the model.

        Returns:
            An integer in ``[1, num_groups]``: the last that many groups train, the rest are frozen. A policy whose
            trainable set is not a run of groups ending at the head (:class:`SurgicalFineTune`, :class:`AutoFreeze`)
            answers the depth of its :meth:`trainable_mask`, see :func:`mask_depth`.
        """

    def trainable_mask(self, epoch: int, num_groups: int) -> list[bool]:
        """Which layer groups, stem first, train in ``epoch``; the last entry (the head) is always ``True``.

        The default is the last :meth:`trainable_depth` groups; policies that train any other set override it.

        Example:
            >>> from lit_transfer.freezing import FreezeUnfreeze
            >>> FreezeUnfreeze(unfreeze_at_epoch=1).trainable_mask(epoch=0, num_groups=3)
            [False, False, True]
        """
        count = max(1, min(self.trainable_depth(epoch, num_groups), num_groups))
        return [index >= num_groups - count for index in range(num_groups)]

    def bind(self, group_names: Sequence[str], max_epochs: int | None = None) -> None:  # noqa: B027
        """Check the policy against a model's layer groups at the start of ``fit`` (called by LayerFreezing).

        Policies that name groups resolve the names here, and policies decided during the run start afresh (a
        resume then restores their state with :meth:`load_state_dict`). The default does nothing.

        Args:
            group_names: The model's layer-group names, stem first, the head last.
            max_epochs: The Trainer's ``max_epochs`` (``None`` or ``-1``: unbounded).
        """

    def state_dict(self) -> dict[str, Any]:
        """What the policy decided during the run (stored in LayerFreezing's checkpoint state); ``{}`` by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`state_dict` returned (a resume); the default ignores it."""

    def is_monotone(self) -> bool:
        """Whether the trainable set only ever grows (no group is frozen again once it has trained)."""
        return True

    def to_config(self) -> dict[str, Any]:
        """Plain-value description (for hyper-parameters and checkpoints); :func:`resolve_policy` reverses it."""
        return {"policy": self.name, **self._args(), "train_bn": self.train_bn}

    def _args(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {**self._args(), "train_bn": self.train_bn}.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FreezingPolicy) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(repr(self))


def check_epoch(name: str, value: int) -> int:
    """Return ``value`` if it is a non-negative integer epoch, else raise a ``ValueError`` naming ``name``."""
    return check_int(name, value, minimum=0, expected="a non-negative integer epoch")


def mask_depth(mask: Sequence[bool]) -> int:
    """Groups from the head down to the deepest trainable one: the :meth:`~FreezingPolicy.trainable_depth` of a mask.

    A model's optimizer gives ``frozen_lr_mult`` to the groups below that depth (see
    :func:`lit_transfer.optim.param_groups.build_param_groups`), i.e. only to groups no trainable group lies under.

    Example:
        >>> mask_depth([True, False, False, True]), mask_depth([False, False, True, True])
        (4, 2)
    """
    trainable = [index for index, flag in enumerate(mask) if flag]
    return len(mask) - trainable[0] if trainable else 1


def head_only(num_groups: int) -> list[bool]:
    """The mask that trains the head alone."""
    return [index == num_groups - 1 for index in range(num_groups)]
