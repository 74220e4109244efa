"""``AutoFreeze``: a policy that decides how deep to fine-tune, and each group's learning rate, from the data.

The measurement it decides from runs in :mod:`lit_transfer.freezing.measure`, called by
:class:`~lit_transfer.callbacks.LayerFreezing` at the decision epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lit_transfer.errors import check_positive_int, is_int, is_number
from lit_transfer.freezing.base import FreezingPolicy, head_only, mask_depth

__all__ = ["AutoFreeze", "AutoFreezePlan"]


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
    mode (see :mod:`lit_transfer.freezing.measure`), each group's relative gradient norm ``||g|| / ||w||`` under the
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
        if not is_number(probe_epochs):
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
        check_positive_int("measure_batches", measure_batches)
        if not is_int(all_groups_at) or all_groups_at < 2:
            raise ValueError(f"`all_groups_at` must be an integer >= 2 (samples per class), got {all_groups_at!r}.")
        if lr_rule not in ("layer_decay", "rgn"):
            raise ValueError(f"`lr_rule` must be 'layer_decay' or 'rgn', got {lr_rule!r}.")
        if not is_number(layer_decay) or not 0 < layer_decay <= 1:
            raise ValueError(f"`layer_decay` must be in (0, 1], got {layer_decay!r}.")
        if not is_number(min_lr_mult) or not 0 < min_lr_mult <= 1:
            raise ValueError(f"`min_lr_mult` must be in (0, 1], got {min_lr_mult!r}.")
        if not is_int(seed):
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
            return head_only(num_groups)
        if len(self.plan.mask) != num_groups:
            raise ValueError(
                f"The AutoFreeze plan covers {len(self.plan.mask)} layer groups, the model has {num_groups}."
            )
        return list(self.plan.mask)

    def trainable_depth(self, epoch: int, num_groups: int) -> int:  # noqa: D102
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
