"""Layer-freezing policies: which layer groups train at which epoch.

A policy is a pure function of the epoch: it answers which layer groups are trainable in that epoch
(:meth:`~FreezingPolicy.trainable_mask`; most policies train a number of groups counted from the head,
:meth:`~FreezingPolicy.trainable_groups`). It knows nothing about Trainers or optimizers;
:class:`~lit_transfer.callbacks.LayerFreezing` applies it (and, for :class:`AutoFreeze`, runs the measurement the
policy decides from). Layer groups come from timm's ``group_matcher`` (see :mod:`lit_transfer.layer_groups`), so one
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
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "POLICIES",
    "AutoFreeze",
    "AutoFreezePlan",
    "FreezeUnfreeze",
    "FreezingPolicy",
    "FullFineTune",
    "GradualUnfreeze",
    "LinearProbe",
    "Milestones",
    "SurgicalFineTune",
    "UnfreezeAtEpochs",
    "mask_depth",
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
            An integer in ``[1, num_groups]``: the last that many groups train, the rest are frozen. A policy whose
            trainable set is not a run of groups ending at the head (:class:`SurgicalFineTune`, :class:`AutoFreeze`)
            answers the depth of its :meth:`trainable_mask`, see :func:`mask_depth`.
        """

    def trainable_mask(self, epoch: int, num_groups: int) -> list[bool]:
        """Which layer groups, stem first, train in ``epoch``; the last entry (the head) is always ``True``.

        The default is the last :meth:`trainable_groups` groups; policies that train any other set override it.

        Example:
            >>> FreezeUnfreeze(unfreeze_at_epoch=1).trainable_mask(epoch=0, num_groups=3)
            [False, False, True]
        """
        count = max(1, min(self.trainable_groups(epoch, num_groups), num_groups))
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


def mask_depth(mask: Sequence[bool]) -> int:
    """Groups from the head down to the deepest trainable one: the :meth:`~FreezingPolicy.trainable_groups` of a mask.

    A model's optimizer gives ``frozen_lr_mult`` to the groups below that depth (see
    :func:`lit_transfer.optim.build_param_groups`), i.e. only to groups no trainable group lies under.

    Example:
        >>> mask_depth([True, False, False, True]), mask_depth([False, False, True, True])
        (4, 2)
    """
    trainable = [index for index, flag in enumerate(mask) if flag]
    return len(mask) - trainable[0] if trainable else 1


def _head_only(num_groups: int) -> list[bool]:
    return [index == num_groups - 1 for index in range(num_groups)]


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
            if isinstance(entry, bool) or not isinstance(entry, (int, str)) or entry == "":
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

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return mask_depth(self.trainable_mask(epoch, num_groups))

    def is_monotone(self) -> bool:  # noqa: D102
        return True

    def _args(self) -> dict[str, Any]:
        return {"groups": list(self.groups)}


@dataclass(frozen=True)
class AutoFreezePlan:
    """What :class:`AutoFreeze` decided, stored in the checkpoint so that a resume follows it.

    Attributes:
        epoch: The first epoch of the plan (the head alone trained before it).
        samples_per_class: Training samples per class measured at the decision.
        relative_grad_norms: Each group's ``||g|| / ||w||`` (stem first, the head last) on the measured batches.
        mask: Which groups train from ``epoch`` on (stem first, the head last).
        lr_mults: Each group's learning-rate multiplier from ``epoch`` on (1 for frozen groups and the head).
    """

    epoch: int
    samples_per_class: float
    relative_grad_norms: tuple[float, ...]
    mask: tuple[bool, ...]
    lr_mults: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for the checkpoint)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> AutoFreezePlan:
        """Reverse of :meth:`to_dict`."""
        return cls(
            epoch=int(state["epoch"]),
            samples_per_class=float(state["samples_per_class"]),
            relative_grad_norms=tuple(float(v) for v in state["relative_grad_norms"]),
            mask=tuple(bool(v) for v in state["mask"]),
            lr_mults=tuple(float(v) for v in state["lr_mults"]),
        )

    def describe(self, group_names: Sequence[str]) -> str:
        """The decision in one line, e.g. ``AutoFreeze: 10 samples/class; ...; from epoch 1 train layer4, head``."""
        norms = " ".join(f"{n} {v:.2g}" for n, v in zip(group_names, self.relative_grad_norms))
        chosen = [(n, m) for n, m, flag in zip(group_names, self.lr_mults, self.mask) if flag]
        return (
            f"AutoFreeze: {self.samples_per_class:.4g} samples/class; relative gradient norm {norms}; from epoch"
            f" {self.epoch} train {', '.join(n for n, _ in chosen)} at LR x {', '.join(f'{m:.2g}' for _, m in chosen)}"
        )


class AutoFreeze(FreezingPolicy):
    """Decide how deep to fine-tune, and each group's learning rate, from the target task itself.

    The run starts as a linear probe: the head alone trains for ``probe_epochs`` epochs (LP-FT, Kumar et al.,
    ICLR 2022: fine-tuning under a trained head distorts the pretrained features less). At the start of the first
    fine-tuning epoch LayerFreezing measures, on ``measure_batches`` fixed training batches with the model in eval
    mode (see :mod:`lit_transfer.auto_freeze`), each group's relative gradient norm ``||g|| / ||w||`` under the
    trained head (Auto-RGN, Lee et al., ICLR 2023): groups whose features the task wants changed get larger
    gradients relative to their weights, whatever the kind of shift (early groups for an input shift, late ones for
    a shift of the labels). It also counts training samples per class ``n``. Then, for the groups below the head,
    with ``r`` each group's norm divided by the largest:

    * **how deep** follows the data (the rule of thumb "more data, retrain more layers"): of the ``G`` groups below
      the head, the ``k = clip(ceil(G * log(n) / log(all_groups_at)), 1, G)`` nearest the head train, so with one
      sample per class only the last group trains, and from ``all_groups_at`` samples per class every group does;
    * **how fast** each trained group learns follows ``lr_rule``: ``"layer_decay"`` (the default) multiplies the
      rate of the group ``i`` steps below the head by ``layer_decay ** i``, as the model's own ``layer_decay`` does
      (leave that one unset, or the two multiply); ``"rgn"`` uses Auto-RGN's rates instead, ``max(r, min_lr_mult)``
      with ``r`` the group's relative gradient norm over the largest below the head. The head keeps its rate.

    The measured norms are always reported in the decision's log line. ``lr_rule="layer_decay"`` is the default
    because on both tasks of the package's two-shift benchmark (``docs/concepts/choosing.md``) the stem has the
    largest relative gradient norm, so per-group Auto-RGN rates would move the stem fastest whatever the shift.

    The plan (the mask, the multipliers, the measured numbers and its epoch) is kept in the checkpoint: a resume,
    before or after the decision, follows the same plan, and the multipliers, already in the restored optimizer and
    scheduler state, are not applied twice.

    Args:
        probe_epochs: Epochs of linear probing before the decision: an integer ``>= 1``, or a fraction of
            ``max_epochs`` in ``(0, 1)`` (rounded, at least 1).
        measure_batches: Training batches the measurement runs on (forward and backward, no optimizer step).
        all_groups_at: Samples per class from which every group trains.
        lr_rule: ``"layer_decay"`` or ``"rgn"``: how a trained group's learning-rate multiplier is set (above).
        layer_decay: Decay per group below the head of ``lr_rule="layer_decay"``, in ``(0, 1]``.
        min_lr_mult: Smallest learning-rate multiplier of a trained group under ``lr_rule="rgn"``, in ``(0, 1]``.
        seed: Seed of the measured subset of the training data (and of its augmentations).
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = AutoFreeze()
        >>> policy.trainable_mask(epoch=0, num_groups=4)  # linear probe first
        [False, False, False, True]
        >>> plan = policy.decide([0.02, 0.1, 0.4, 0.9], samples_per_class=300, epoch=1)
        >>> plan.mask, plan.lr_mults
        ((True, True, True, True), (0.343, 0.49, 0.7, 1.0))
        >>> policy.decide([0.02, 0.1, 0.4, 0.9], samples_per_class=1, epoch=1).mask
        (False, False, True, True)
    """

    name = "auto"

    def __init__(
        self,
        probe_epochs: int | float = 1,
        measure_batches: int = 4,
        all_groups_at: int = 10,
        lr_rule: str = "layer_decay",
        layer_decay: float = 0.7,
        min_lr_mult: float = 0.1,
        seed: int = 0,
        train_bn: bool = False,
    ) -> None:
        super().__init__(train_bn)
        if isinstance(probe_epochs, bool) or not isinstance(probe_epochs, (int, float)):
            raise ValueError(f"`probe_epochs` must be an integer >= 1 or a fraction in (0, 1), got {probe_epochs!r}.")
        if isinstance(probe_epochs, float) and probe_epochs.is_integer() and probe_epochs >= 1:
            probe_epochs = int(probe_epochs)
        if (isinstance(probe_epochs, int) and probe_epochs < 1) or (
            isinstance(probe_epochs, float) and not 0 < probe_epochs < 1
        ):
            raise ValueError(
                f"`probe_epochs` must be an integer >= 1 (epochs of linear probing before AutoFreeze decides) or a"
                f" fraction of max_epochs in (0, 1), got {probe_epochs!r}."
            )
        if isinstance(measure_batches, bool) or not isinstance(measure_batches, int) or measure_batches < 1:
            raise ValueError(f"`measure_batches` must be a positive integer, got {measure_batches!r}.")
        if isinstance(all_groups_at, bool) or not isinstance(all_groups_at, int) or all_groups_at < 2:
            raise ValueError(f"`all_groups_at` must be an integer >= 2 (samples per class), got {all_groups_at!r}.")
        if lr_rule not in ("layer_decay", "rgn"):
            raise ValueError(f"`lr_rule` must be 'layer_decay' or 'rgn', got {lr_rule!r}.")
        if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
            raise ValueError(f"`layer_decay` must be in (0, 1], got {layer_decay!r}.")
        if isinstance(min_lr_mult, bool) or not isinstance(min_lr_mult, (int, float)) or not 0 < min_lr_mult <= 1:
            raise ValueError(f"`min_lr_mult` must be in (0, 1], got {min_lr_mult!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer, got {seed!r}.")
        self.probe_epochs = probe_epochs
        self.measure_batches = measure_batches
        self.all_groups_at = all_groups_at
        self.lr_rule = lr_rule
        self.layer_decay = float(layer_decay)
        self.min_lr_mult = float(min_lr_mult)
        self.seed = seed
        self.decision_epoch = probe_epochs if isinstance(probe_epochs, int) else 1
        self.plan: AutoFreezePlan | None = None

    def bind(self, group_names: Sequence[str], max_epochs: int | None = None) -> None:
        """Start afresh (no plan) and turn a fractional ``probe_epochs`` into an epoch of ``max_epochs``."""
        self.plan = None
        if isinstance(self.probe_epochs, float):
            if max_epochs is None or max_epochs < 1:
                raise ValueError(
                    f"AutoFreeze(probe_epochs={self.probe_epochs}) is a fraction of `max_epochs`, but the Trainer's"
                    f" max_epochs is {max_epochs!r}: set `max_epochs`, or give `probe_epochs` as a number of epochs."
                )
            self.decision_epoch = max(1, round(self.probe_epochs * max_epochs))

    def awaits_plan(self, epoch: int) -> bool:
        """Whether ``epoch`` is at or past the decision epoch and nothing has been decided yet."""
        return self.plan is None and epoch >= self.decision_epoch

    def decide(self, relative_grad_norms: Sequence[float], samples_per_class: float, epoch: int) -> AutoFreezePlan:
        """The plan for measured relative gradient norms (stem first, the head last) and samples per class.

        Args:
            relative_grad_norms: Each group's ``||g|| / ||w||``, the head last.
            samples_per_class: Training samples per class.
            epoch: The first epoch of the plan.

        Returns:
            The plan (also kept as :attr:`plan`).
        """
        norms = [max(0.0, float(v)) for v in relative_grad_norms]
        body = norms[:-1]
        largest = max(body, default=0.0)
        ratios = [v / largest if largest > 0 else 1.0 for v in body]
        n = max(1.0, float(samples_per_class))
        below = len(body)
        depth = max(1, min(below, math.ceil(below * math.log(n) / math.log(self.all_groups_at) - 1e-9)))
        mask = [index >= below - depth for index in range(below)] + [True]
        if self.lr_rule == "rgn":
            rates = [max(r, self.min_lr_mult) for r in ratios]
        else:
            rates = [self.layer_decay ** (below - index) for index in range(below)]
        mults = [rate if train else 1.0 for rate, train in zip(rates, mask)] + [1.0]
        self.plan = AutoFreezePlan(epoch, n, tuple(norms), tuple(mask), tuple(round(m, 6) for m in mults))
        return self.plan

    def trainable_mask(self, epoch: int, num_groups: int) -> list[bool]:  # noqa: D102
        if self.plan is None or epoch < self.plan.epoch:
            return _head_only(num_groups)
        if len(self.plan.mask) != num_groups:
            raise ValueError(
                f"The AutoFreeze plan covers {len(self.plan.mask)} layer groups, the model has {num_groups}."
            )
        return list(self.plan.mask)

    def trainable_groups(self, epoch: int, num_groups: int) -> int:  # noqa: D102
        return mask_depth(self.trainable_mask(epoch, num_groups))

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"decision_epoch": self.decision_epoch, "plan": None if self.plan is None else self.plan.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        if "decision_epoch" in state:
            self.decision_epoch = int(state["decision_epoch"])
        plan = state.get("plan")
        self.plan = None if plan is None else AutoFreezePlan.from_dict(plan)

    def _args(self) -> dict[str, Any]:
        return {
            "probe_epochs": self.probe_epochs,
            "measure_batches": self.measure_batches,
            "all_groups_at": self.all_groups_at,
            "lr_rule": self.lr_rule,
            "layer_decay": self.layer_decay,
            "min_lr_mult": self.min_lr_mult,
            "seed": self.seed,
        }


POLICIES: dict[str, type[FreezingPolicy]] = {
    cls.name: cls
    for cls in (
        FullFineTune,
        LinearProbe,
        FreezeUnfreeze,
        GradualUnfreeze,
        UnfreezeAtEpochs,
        SurgicalFineTune,
        AutoFreeze,
    )
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
