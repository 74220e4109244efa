"""The fixed freezing policies: full fine-tune, linear probe, LP-FT, gradual, explicit epochs, surgical.

Layer groups come from timm's ``group_matcher`` (see :mod:`lit_transfer.freezing.layer_groups`), so one policy serves
every timm family. Policies are accepted as objects or by name (``"linear_probe"``) wherever a policy is expected,
e.g. in YAML::

    model:
      freeze: freeze_unfreeze            # defaults
      # or
      freeze:
        class_path: GradualUnfreeze
        init_args: {every_n_epochs: 2}
"""

from __future__ import annotations

import bisect
import difflib
import itertools
from collections.abc import Sequence
from typing import Any

from lit_transfer.errors import check_positive_int, is_int
from lit_transfer.freezing.base import FreezingPolicy, check_epoch, mask_depth

__all__ = [
    "FreezeUnfreeze",
    "FullFineTune",
    "GradualUnfreeze",
    "LinearProbe",
    "SurgicalFineTune",
    "UnfreezeAtEpochs",
]


class FullFineTune(FreezingPolicy):
    """Every group trains from the first epoch.

    Example:
        >>> FullFineTune().trainable_depth(epoch=0, num_groups=6)
        6
    """

    name = "full_fine_tune"

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return num_groups


class LinearProbe(FreezingPolicy):
    """Only the head trains; the backbone stays frozen for the whole run.

    Example:
        >>> LinearProbe().trainable_depth(epoch=10, num_groups=6)
        1
    """

    name = "linear_probe"

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return 1


class FreezeUnfreeze(FreezingPolicy):
    """Train the head alone for ``unfreeze_at_epoch`` epochs, then everything (fastai's ``fine_tune``).

    Args:
        unfreeze_at_epoch: First epoch in which the whole model trains.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = FreezeUnfreeze(unfreeze_at_epoch=2)
        >>> [policy.trainable_depth(e, num_groups=6) for e in range(4)]
        [1, 1, 6, 6]
    """

    name = "freeze_unfreeze"

    def __init__(self, unfreeze_at_epoch: int = 1, train_bn: bool = False) -> None:
        super().__init__(train_bn)
        self.unfreeze_at_epoch = check_epoch("unfreeze_at_epoch", unfreeze_at_epoch)

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
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
        >>> [policy.trainable_depth(e, num_groups=4) for e in range(8)]
        [1, 1, 2, 2, 3, 3, 4, 4]
    """

    name = "gradual_unfreeze"

    def __init__(
        self, every_n_epochs: int = 1, start_epoch: int | None = None, groups_per_step: int = 1, train_bn: bool = False
    ) -> None:
        super().__init__(train_bn)
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("groups_per_step", groups_per_step)
        self.every_n_epochs = every_n_epochs
        self.start_epoch = every_n_epochs if start_epoch is None else check_epoch("start_epoch", start_epoch)
        self.groups_per_step = groups_per_step

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
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
    only the head trains.

    Args:
        schedule: Mapping from epoch to the number of trainable groups from that epoch on.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = UnfreezeAtEpochs({0: 1, 2: 3, 5: -1})
        >>> [policy.trainable_depth(e, num_groups=6) for e in (0, 1, 2, 4, 5)]
        [1, 1, 3, 3, 6]
    """

    name = "unfreeze_at_epochs"

    def __init__(self, schedule: dict[int, int], train_bn: bool = False) -> None:
        super().__init__(train_bn)
        self.schedule = _parse_schedule(schedule, "schedule")
        self._epochs = list(self.schedule)

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
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
        epoch_int = check_epoch(argument, int(epoch))
        if not is_int(count) or (count < 1 and count != -1):
            raise ValueError(f"`{argument}[{epoch!r}]` must be a positive number of groups or -1 (all), got {count!r}.")
        parsed[epoch_int] = count
    return dict(sorted(parsed.items()))


class SurgicalFineTune(FreezingPolicy):
    """Train the listed layer groups and the head for the whole run; every other group stays frozen.

    Surgical fine-tuning (Lee et al., ICLR 2023, "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts"):
    which block to tune follows the kind of shift, e.g. the first group for an input-level shift (corruptions,
    another sensor), the last ones for a shift of the output relation.

    Args:
        groups: The groups that train besides the head: indices from the stem (``0`` is the first group), negative
            indices from the head (``-1`` is the head, ``-2`` the last group before it), or group names as the model
            calls them (``"stem"``, ``"layer1"``; the names LayerFreezing announces). Checked against the model's
            groups when ``fit`` starts; a wrong entry is an error listing the model's groups.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = SurgicalFineTune(groups=[0])
        >>> policy.bind(["stem", "layer1", "layer2", "head"])
        >>> policy.trainable_mask(epoch=3, num_groups=4)
        [True, False, False, True]
        >>> SurgicalFineTune(groups=[-2]).trainable_mask(epoch=0, num_groups=4)
        [False, False, True, True]
    """

    name = "surgical"

    def __init__(self, groups: Sequence[int | str] = (0,), train_bn: bool = False) -> None:
        super().__init__(train_bn)
        if isinstance(groups, (str, int)):
            groups = [groups]
        if not isinstance(groups, Sequence) or not groups:
            raise ValueError(f"`groups` must be a non-empty list of group indices or names, got {groups!r}.")
        for entry in groups:
            if not (is_int(entry) or isinstance(entry, str)) or entry == "":
                raise ValueError(
                    f"`groups` entries must be group indices (0 = the first group, -2 = the last before the head)"
                    f" or group names such as 'stem', got {entry!r} in {list(groups)!r}."
                )
        self.groups: list[int | str] = list(groups)
        self._names: list[str] | None = None

    def bind(self, group_names: Sequence[str], max_epochs: int | None = None) -> None:  # noqa: D102
        self._names = list(group_names)
        self._indices(len(self._names))

    def _indices(self, num_groups: int) -> set[int]:
        names = self._names if self._names is not None and len(self._names) == num_groups else None
        known = ", ".join(f"{i}={n!r}" for i, n in enumerate(names)) if names else f"indices 0..{num_groups - 1}"
        indices: set[int] = set()
        for entry in self.groups:
            if isinstance(entry, str):
                if names is None:
                    raise ValueError(
                        f"SurgicalFineTune(groups={self.groups!r}) names a group, {entry!r}, but the model's group"
                        " names are not known yet: LayerFreezing resolves them when `fit` starts."
                    )
                if entry not in names:
                    close = difflib.get_close_matches(entry, names, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ValueError(
                        f"SurgicalFineTune: the model has no layer group {entry!r}.{hint} Its groups (stem first):"
                        f" {known}."
                    )
                indices.add(names.index(entry))
            elif not -num_groups <= entry < num_groups:
                raise ValueError(
                    f"SurgicalFineTune: group index {entry} is out of range for a model with {num_groups} layer groups"
                    f" ({known}); use 0..{num_groups - 1} from the stem or -1..-{num_groups} from the head."
                )
            else:
                indices.add(entry % num_groups)
        return indices

    def trainable_mask(self, epoch: int, num_groups: int) -> list[bool]:  # noqa: D102
        chosen = self._indices(num_groups) | {num_groups - 1}
        return [index in chosen for index in range(num_groups)]

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return mask_depth(self.trainable_mask(epoch, num_groups))

    def is_monotone(self) -> bool:  # noqa: D102
        return True

    def _args(self) -> dict[str, Any]:
        return {"groups": list(self.groups)}
