"""Layer-freezing policies: which layer groups train at which epoch.

A policy is a pure function of the epoch: it answers how many layer groups, counted from the head, are
trainable in that epoch. It knows nothing about Trainers or optimizers; :class:`~lit_transfer.callbacks.LayerFreezing`
applies it. Layer groups come from timm's ``group_matcher`` (see :mod:`lit_transfer.layer_groups`), so one
policy serves every timm family.

Policies are accepted as objects or by name (``"linear_probe"``) wherever a policy is expected, e.g. in YAML::

    model:
      freeze: freeze_unfreeze            # defaults
      # or
      freeze:
        class_path: lit_transfer.freezing.GradualUnfreeze
        init_args: {every_n_epochs: 2}
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import warnings
from abc import ABC, abstractmethod
from typing import Any

__all__ = [
    "POLICIES",
    "FreezeUnfreeze",
    "FreezingPolicy",
    "FullFineTune",
    "GradualUnfreeze",
    "LinearProbe",
    "Milestones",
    "UnfreezeAtEpochs",
    "resolve_policy",
]


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
    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        """Number of trainable layer groups, counted from the head, in ``epoch``.

        Args:
            epoch: Zero-based training epoch.
            num_groups: Total number of layer groups of the model.

        Returns:
            An integer in ``[1, num_groups]``: the last that many groups train, the rest are frozen.
        """

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


def _check_epoch(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer epoch, got {value!r}.")
    return value


class FullFineTune(FreezingPolicy):
    """Every group trains from the first epoch.

    Example:
        >>> FullFineTune().trainable_groups(epoch=0, num_groups=6)
        6
    """

    name = "full_fine_tune"

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return num_groups


class LinearProbe(FreezingPolicy):
    """Only the head trains; the backbone stays frozen for the whole run.

    Example:
        >>> LinearProbe().trainable_groups(epoch=10, num_groups=6)
        1
    """

    name = "linear_probe"

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return 1


class FreezeUnfreeze(FreezingPolicy):
    """Train the head alone for ``unfreeze_at_epoch`` epochs, then everything (fastai's ``fine_tune``).

    Args:
        unfreeze_at_epoch: First epoch in which the whole model trains.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = FreezeUnfreeze(unfreeze_at_epoch=2)
        >>> [policy.trainable_groups(e, num_groups=6) for e in range(4)]
        [1, 1, 6, 6]
    """

    name = "freeze_unfreeze"

    def __init__(self, unfreeze_at_epoch: int = 1, train_bn: bool = False) -> None:
        super().__init__(train_bn)
        self.unfreeze_at_epoch = _check_epoch("unfreeze_at_epoch", unfreeze_at_epoch)

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return num_groups if epoch >= self.unfreeze_at_epoch else 1

    def _args(self) -> dict[str, Any]:
        return {"unfreeze_at_epoch": self.unfreeze_at_epoch}


class GradualUnfreeze(FreezingPolicy):
    """Unfreeze one more group from the top every ``every_n_epochs`` epochs (ULMFiT, Howard & Ruder 2018).

    Args:
        every_n_epochs: Epochs between two unfreezing steps.
        start_epoch: Epoch of the first unfreezing step (the head alone trains before it).
        groups_per_step: Groups unfrozen at each step.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = GradualUnfreeze(every_n_epochs=2)
        >>> [policy.trainable_groups(e, num_groups=4) for e in range(8)]
        [1, 1, 2, 2, 3, 3, 4, 4]
    """

    name = "gradual_unfreeze"

    def __init__(
        self, every_n_epochs: int = 1, start_epoch: int | None = None, groups_per_step: int = 1, train_bn: bool = False
    ) -> None:
        super().__init__(train_bn)
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be a positive integer, got {every_n_epochs!r}.")
        if isinstance(groups_per_step, bool) or not isinstance(groups_per_step, int) or groups_per_step < 1:
            raise ValueError(f"`groups_per_step` must be a positive integer, got {groups_per_step!r}.")
        self.every_n_epochs = every_n_epochs
        self.start_epoch = every_n_epochs if start_epoch is None else _check_epoch("start_epoch", start_epoch)
        self.groups_per_step = groups_per_step

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        if epoch < self.start_epoch:
            return 1
        steps = 1 + (epoch - self.start_epoch) // self.every_n_epochs
        return min(num_groups, 1 + steps * self.groups_per_step)

    def _args(self) -> dict[str, Any]:
        return {
            "every_n_epochs": self.every_n_epochs,
            "start_epoch": self.start_epoch,
            "groups_per_step": self.groups_per_step,
        }


class UnfreezeAtEpochs(FreezingPolicy):
    """Explicit schedule: ``{epoch: number of trainable groups from the head}``.

    A value of ``-1`` (or any value at least the number of groups) means every group. Before the first listed epoch
    only the head trains. Formerly ``Milestones`` (policy name ``milestones``), a name that clashed with
    ``BatchSizeRamp(milestones=)`` and ``MultiStepLR(milestones=)``, which schedule other things; the old names still
    work, with a ``DeprecationWarning``.

    Args:
        schedule: Mapping from epoch to the number of trainable groups from that epoch on.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = UnfreezeAtEpochs({0: 1, 2: 3, 5: -1})
        >>> [policy.trainable_groups(e, num_groups=6) for e in (0, 1, 2, 4, 5)]
        [1, 1, 3, 3, 6]
    """

    name = "unfreeze_at_epochs"

    def __init__(self, schedule: dict[int, int], train_bn: bool = False) -> None:
        super().__init__(train_bn)
        self.schedule = _parse_schedule(schedule, "schedule")
        self._epochs = list(self.schedule)

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        index = bisect.bisect_right(self._epochs, epoch) - 1
        if index < 0:
            return 1
        count = self.schedule[self._epochs[index]]
        return num_groups if count == -1 else min(count, num_groups)

    def is_monotone(self) -> bool:  # noqa: D102
        counts = [float("inf") if c == -1 else c for c in self.schedule.values()]
        return all(a <= b for a, b in itertools.pairwise(counts))

    def _args(self) -> dict[str, Any]:
        return {"schedule": dict(self.schedule)}


def _parse_schedule(schedule: dict[int, int], argument: str) -> dict[int, int]:
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(f"`{argument}` must be a non-empty mapping {{epoch: trainable groups}}, got {schedule!r}.")
    parsed: dict[int, int] = {}
    for epoch, count in schedule.items():
        epoch_int = _check_epoch(argument, int(epoch))
        if isinstance(count, bool) or not isinstance(count, int) or (count < 1 and count != -1):
            raise ValueError(f"`{argument}[{epoch!r}]` must be a positive number of groups or -1 (all), got {count!r}.")
        parsed[epoch_int] = count
    return dict(sorted(parsed.items()))


_MILESTONES_DEPRECATED = (
    "The freezing policy `Milestones` (name `milestones`) is deprecated: use `UnfreezeAtEpochs` (name"
    " `unfreeze_at_epochs`) with the same mapping as `schedule`, e.g. `UnfreezeAtEpochs({{0: 1, 2: -1}})` or"
    " `freeze: {{policy: unfreeze_at_epochs, schedule: {{0: 1, 2: -1}}}}`. Got {got}."
)


class Milestones(UnfreezeAtEpochs):
    """Deprecated name of :class:`UnfreezeAtEpochs` (warns with a ``DeprecationWarning``).

    Args:
        milestones: Mapping from epoch to the number of trainable groups from that epoch on.
        train_bn: See :class:`FreezingPolicy`.
    """

    def __init__(self, milestones: dict[int, int], train_bn: bool = False) -> None:
        message = _MILESTONES_DEPRECATED.format(got=f"Milestones({milestones!r})")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        super().__init__(_parse_schedule(milestones, "milestones"), train_bn=train_bn)


POLICIES: dict[str, type[FreezingPolicy]] = {
    cls.name: cls for cls in (FullFineTune, LinearProbe, FreezeUnfreeze, GradualUnfreeze, UnfreezeAtEpochs)
}
"""The policies by name (the names :func:`resolve_policy` accepts, besides the deprecated ``milestones``)."""


def resolve_policy(
    policy: FreezingPolicy | str | dict[str, Any] | None, train_bn: bool | None = None
) -> FreezingPolicy:
    """Turn a policy object, name or plain-value config into a policy object.

    Args:
        policy: A :class:`FreezingPolicy`, a name from :data:`POLICIES` (``"linear_probe"``), a config dict as
            written by :meth:`FreezingPolicy.to_config` (``{"policy": "freeze_unfreeze", "unfreeze_at_epoch": 3}``),
            or ``None`` for :class:`FullFineTune`. The deprecated name ``"milestones"`` (and configs written with
            it, ``{"policy": "milestones", "milestones": {...}}``, as in older checkpoints) gives an
            :class:`UnfreezeAtEpochs` with a ``DeprecationWarning``.
        train_bn: If given, overrides the policy's ``train_bn``.

    Returns:
        The policy object.

    Raises:
        ValueError: For an unknown name (with the closest known names) or bad arguments.

    Example:
        >>> resolve_policy("freeze_unfreeze")
        FreezeUnfreeze(unfreeze_at_epoch=1, train_bn=False)
    """
    if policy is None:
        resolved: FreezingPolicy = FullFineTune()
    elif isinstance(policy, FreezingPolicy):
        resolved = policy
    elif isinstance(policy, str):
        resolved = _policy_class(policy)()
    elif isinstance(policy, dict):
        args = dict(policy)
        name = args.pop("policy", None)
        if not isinstance(name, str):
            raise ValueError(f"A freezing-policy config needs a `policy` name, got {policy!r}.")
        if _is_deprecated_milestones(name):
            warnings.warn(_MILESTONES_DEPRECATED.format(got=repr(policy)), DeprecationWarning, stacklevel=2)
            if "milestones" in args:
                args["schedule"] = _parse_schedule(args.pop("milestones"), "milestones")
            name = UnfreezeAtEpochs.name
        resolved = _policy_class(name)(**args)
    else:
        raise ValueError(
            f"`freeze` must be a FreezingPolicy, a policy name or a config dict, got {type(policy).__name__}."
        )
    if train_bn is not None and train_bn != resolved.train_bn:
        resolved = resolve_policy({**resolved.to_config(), "train_bn": train_bn})
    return resolved


def _is_deprecated_milestones(name: str) -> bool:
    return name.strip().lower() == "milestones"


def _policy_class(name: str) -> type[FreezingPolicy]:
    key = name.strip().lower().replace("-", "_")
    if key == "milestones":
        warnings.warn(_MILESTONES_DEPRECATED.format(got=repr(name)), DeprecationWarning, stacklevel=3)
        key = UnfreezeAtEpochs.name
    if key not in POLICIES:
        close = difflib.get_close_matches(key, POLICIES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown freezing policy {name!r}.{hint} Known policies: {', '.join(POLICIES)}.")
    return POLICIES[key]
