"""``AutoFreeze``: a policy that chooses how deep to fine-tune by short trial fine-tunes scored on validation data.

The trials run in :mod:`lit_transfer.freezing.trials` (the candidates and successive halving) and
:mod:`lit_transfer.freezing.measure` (the sandbox on the Trainer's data), called by
:class:`~lit_transfer.callbacks.LayerFreezing` at the decision epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lit_transfer.errors import check_int, check_positive_int, is_int, is_number
from lit_transfer.freezing.base import FreezingPolicy, mask_depth
from lit_transfer.freezing.trials import Candidate, TrialResult, depth_candidates, halving_cost

__all__ = ["AutoFreeze", "AutoFreezePlan"]

ALL = "all"
"""The depth that trains every group (a value of ``AutoFreeze(depths=...)``)."""
MIN_TRIAL_STEPS = 4
"""The fewest first-round steps a candidate's trial takes (fewer, or ``trial_steps`` if that is smaller, and the
trials do not run)."""


@dataclass(frozen=True)
class AutoFreezePlan:
    """What :class:`AutoFreeze` decided, stored in the checkpoint so that a resume follows it.

    Attributes:
        epoch: The first epoch of the plan (the head alone trained before it).
        samples_per_class: Training samples per class at the decision.
        chosen: The chosen candidate's name (e.g. ``"linear probe"``, ``"layer4 + head"``, ``"all groups"``).
        reason: Why: ``"validation"`` (the trials' best), ``"default: <why>"`` (the stated fallback).
        mask: Which groups train from ``epoch`` on (stem first, the head last).
        lr_mults: Each group's learning-rate multiplier from ``epoch`` on (1 for frozen groups and the head).
        trials: Each tried candidate's name, trial steps, validation loss and the paired standard error of its
            difference from the lowest loss, lowest first (empty when no trial ran).
        val_samples: Validation samples the trials were scored on (0 when none ran).
    """

    epoch: int
    samples_per_class: float
    chosen: str
    reason: str
    mask: tuple[bool, ...]
    lr_mults: tuple[float, ...]
    trials: tuple[TrialResult, ...] = field(default=())
    val_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for the checkpoint)."""
        state = asdict(self)
        state["mask"], state["lr_mults"] = list(self.mask), list(self.lr_mults)
        state["trials"] = [asdict(t) for t in self.trials]
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> AutoFreezePlan:
        """Reverse of :meth:`to_dict` (a plan of an earlier release, without trials, loads with none)."""
        return cls(
            epoch=int(state["epoch"]),
            samples_per_class=float(state["samples_per_class"]),
            chosen=str(state.get("chosen", "")),
            reason=str(state.get("reason", "")),
            mask=tuple(bool(v) for v in state["mask"]),
            lr_mults=tuple(float(v) for v in state["lr_mults"]),
            trials=tuple(TrialResult(**t) for t in state.get("trials", ())),
            val_samples=int(state.get("val_samples", 0)),
        )

    def describe(self, group_names: Sequence[str]) -> str:
        """The decision in one line, e.g. ``AutoFreeze: 10 samples/class; validation loss ...; chose ...``."""
        if self.trials:
            scores = ", ".join(
                f"{t.name} {t.val_loss:.3g}"
                + (f" (paired se {t.paired_se:.2g})" if t.paired_se else "")
                + f" after {t.steps} steps"
                for t in self.trials
            )
            evidence = f"validation loss on {self.val_samples} samples: {scores}"
        else:
            evidence = "no trials"
        chosen = [(n, m) for n, m, flag in zip(group_names, self.lr_mults, self.mask) if flag]
        return (
            f"AutoFreeze: {self.samples_per_class:.4g} samples/class; {evidence}; chose {self.chosen}"
            f" ({self.reason}): from epoch {self.epoch} train {', '.join(n for n, _ in chosen)}"
            f" at LR x {', '.join(f'{m:.2g}' for _, m in chosen)}"
        )


class AutoFreeze(FreezingPolicy):
    """Choose how deep to fine-tune from the target task itself: short trial fine-tunes scored on validation.

    The run starts as a linear probe: the head alone trains for ``probe_epochs`` epochs (LP-FT, Kumar et al.,
    ICLR 2022: fine-tuning under a trained head distorts the pretrained features less). At the start of the first
    epoch after it, :class:`~lit_transfer.callbacks.LayerFreezing` tries each candidate depth (``depths``: how many
    groups below the head train; ``0`` keeps the linear probe, ``"all"`` trains every group) from the run's current
    weights in a sandbox: ``trial_steps`` optimizer steps on seeded training batches with the run's optimizer and
    base learning rates, each trained group at ``lr * layer_decay ** i`` (``i`` steps below the head), then the
    task's loss on up to ``max_val_samples`` validation samples. Successive halving (Jamieson & Talwalkar, 2016)
    keeps the best ``1 / halving`` of the candidates and gives the survivors ``halving`` times more steps, until one
    is left. The weights, optimizer, random generators, modes and flags are restored afterwards: only the decision
    leaves the sandbox.

    The trials' cost is bounded by the run's length: all candidates' steps together, every round, take at most
    ``max_trial_share`` of the training steps left in the run (Lightning's ``estimated_stepping_batches`` less the
    steps taken, in batches). The first round is shortened to fit; when even :data:`MIN_TRIAL_STEPS` steps per
    candidate would not fit (a short run on few images), no trial runs and the default is the plan, as the log line
    says: the trials cannot pay for themselves there.

    The candidate with the lowest validation loss wins, except that the stated default (``default``, every group
    with layer decay: the LP-FT + layer-decay recipe) is kept unless the winner beats it by more than
    ``min_advantage`` paired standard errors of the per-sample losses; and with fewer than ``min_val_samples``
    validation samples (or no validation data) no trial runs and the default is taken, as the log line says. So
    the linear probe is chosen when fine-tuning lowers validation loss less than training the head alone does,
    which is what a task where fine-tuning hurts looks like.

    The plan (the mask, the multipliers, the trials' numbers, its epoch) is kept in the checkpoint: a resume,
    before or after the decision, follows the same plan, and the multipliers, already in the restored optimizer and
    scheduler state, are not applied twice. Under DDP rank 0 runs the trials and broadcasts the plan.

    Args:
        probe_epochs: Epochs of linear probing before the decision: an integer ``>= 1``, or a fraction of
            ``max_epochs`` in ``(0, 1)`` (rounded, at least 1).
        depths: Candidate depths: integers ``>= 0`` (groups below the head) or ``"all"``.
        default: The depth taken without evidence (too little validation data, or no clear winner).
        trial_steps: Optimizer steps of each candidate in the first halving round; ``None`` takes one epoch of the
            training loader's steps, at least 4 and at most 50. ``max_trial_share`` may shorten it.
        max_trial_share: The most the trials may train, all candidates and rounds together, as a share of the
            training steps left in the run; ``None``: no bound. Its default keeps the trials' steps at a quarter of
            the fine-tune's, so that ``auto`` end to end stays within about 1.5 times one fine-tune.
        halving: Survivors per round are the best ``ceil(n / halving)``; ``halving >= len(depths)`` is one round.
        max_val_samples: Validation samples the trials are scored on (a seeded subset when there are more).
        min_val_samples: Fewer validation samples than this: no trials, the default.
        min_advantage: Paired standard errors by which a candidate must beat the default to replace it.
        layer_decay: Learning-rate decay per group below the head of every trained group, in ``(0, 1]``.
        seed: Seed of the trials' training batches (and their augmentations).
        new_groups: The model's new, randomly initialised groups on top (the head; a segmenter's decoder and head,
            which :class:`~lit_transfer.TransferSegmenter` sets): the probe trains them, every candidate trains
            them at the full rate, and depths count the groups below them.
        train_bn: See :class:`FreezingPolicy`.

    Example:
        >>> policy = AutoFreeze()
        >>> policy.trainable_mask(epoch=0, num_groups=4)  # linear probe first
        [False, False, False, True]
        >>> names = ["stem", "layer1", "layer2", "head"]
        >>> [c.name for c in policy.candidates(names)]
        ['linear probe', 'layer2 + head', 'all groups']
        >>> plan = policy.fallback(names, samples_per_class=10, epoch=1, why="no validation data")
        >>> plan.mask, [round(m, 3) for m in plan.lr_mults]
        ((True, True, True, True), [0.343, 0.49, 0.7, 1.0])
    """

    name = "auto"

    def __init__(
        self,
        probe_epochs: int | float = 1,
        depths: Sequence[int | str] = (0, 1, ALL),
        default: int | str = ALL,
        trial_steps: int | None = None,
        max_trial_share: float | None = 0.25,
        halving: int = 3,
        max_val_samples: int = 128,
        min_val_samples: int = 20,
        min_advantage: float = 1.0,
        layer_decay: float = 0.7,
        seed: int = 0,
        new_groups: int = 1,
        train_bn: bool = False,
    ) -> None:
        super().__init__(train_bn)
        self.probe_epochs = _check_probe_epochs(probe_epochs)
        depths = [depths] if isinstance(depths, (int, str)) else list(depths)
        if not depths or not all(_is_depth(d) for d in depths):
            raise ValueError(
                f"`depths` must be a list of integers >= 0 (groups below the head) or {ALL!r}, got {depths!r}."
            )
        if not _is_depth(default):
            raise ValueError(f"`default` must be an integer >= 0 or {ALL!r}, got {default!r}.")
        if trial_steps is not None:
            check_positive_int("trial_steps", trial_steps)
        if max_trial_share is not None and (not is_number(max_trial_share) or not 0 < max_trial_share <= 1):
            raise ValueError(
                "`max_trial_share` must be in (0, 1] (the trials' steps as a share of the run's steps left) or None"
                f" (no bound), got {max_trial_share!r}."
            )
        check_int("halving", halving, minimum=2)
        check_positive_int("max_val_samples", max_val_samples)
        check_int("min_val_samples", min_val_samples, minimum=2)
        if not is_number(min_advantage) or min_advantage < 0:
            raise ValueError(f"`min_advantage` must be a number >= 0 (standard errors), got {min_advantage!r}.")
        if not is_number(layer_decay) or not 0 < layer_decay <= 1:
            raise ValueError(f"`layer_decay` must be in (0, 1], got {layer_decay!r}.")
        check_int("seed", seed)
        check_positive_int("new_groups", new_groups)
        self.depths: list[int | str] = depths
        self.default = default
        self.trial_steps = trial_steps
        self.max_trial_share = None if max_trial_share is None else float(max_trial_share)
        self.halving = int(halving)
        self.max_val_samples = int(max_val_samples)
        self.min_val_samples = int(min_val_samples)
        self.min_advantage = float(min_advantage)
        self.layer_decay = float(layer_decay)
        self.seed = seed
        self.new_groups = int(new_groups)
        self.decision_epoch = self.probe_epochs if isinstance(self.probe_epochs, int) else 1
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

    def candidates(self, group_names: Sequence[str]) -> list[Candidate]:
        """The candidate plans for these groups (stem first, the head last), duplicates removed."""
        return depth_candidates(group_names, self.depths, self.layer_decay, self.new_groups)

    def default_candidate(self, group_names: Sequence[str]) -> Candidate:
        """The plan taken without evidence."""
        return depth_candidates(group_names, [self.default], self.layer_decay, self.new_groups)[0]

    def fallback(self, group_names: Sequence[str], samples_per_class: float, epoch: int, why: str) -> AutoFreezePlan:
        """The default plan, with the reason no trial decided (also kept as :attr:`plan`)."""
        default = self.default_candidate(group_names)
        return self._keep(AutoFreezePlan(epoch, samples_per_class, default.name, f"default: {why}", *default.plan))

    def choose(
        self,
        group_names: Sequence[str],
        results: Sequence[TrialResult],
        samples_per_class: float,
        epoch: int,
        val_samples: int,
    ) -> AutoFreezePlan:
        """The plan from the trials' results (the last round's survivor first, see :func:`successive_halving`).

        Args:
            group_names: The layer groups' names, the head last.
            results: Every candidate's last trial, best first; ``paired_se`` against the best.
            samples_per_class: Training samples per class.
            epoch: The first epoch of the plan.
            val_samples: Validation samples the trials were scored on.

        Returns:
            The plan (also kept as :attr:`plan`).
        """
        by_name = {c.name: c for c in self.candidates(group_names)}
        best = results[0]
        default = self.default_candidate(group_names)
        reason = "lowest validation loss"
        chosen = by_name[best.name]
        rival = next((r for r in results if r.name == default.name), None)
        if best.name != default.name and rival is not None:
            margin = rival.val_loss - best.val_loss
            if margin <= self.min_advantage * rival.paired_se:
                chosen = default
                reason = (
                    f"default: {best.name} was not lower by more than {self.min_advantage:g} paired standard"
                    f" error{'s' if self.min_advantage != 1 else ''}"
                )
            else:
                reason = f"lowest validation loss, {margin / max(rival.paired_se, 1e-12):.1f} se below the default"
        plan = AutoFreezePlan(epoch, samples_per_class, chosen.name, reason, *chosen.plan, tuple(results), val_samples)
        return self._keep(plan)

    def first_round_steps(self, steps_per_epoch: int | None) -> int:
        """Steps of each candidate in the first round: ``trial_steps``, else one epoch clipped to [4, 50]."""
        if self.trial_steps is not None:
            return self.trial_steps
        return max(MIN_TRIAL_STEPS, min(50, steps_per_epoch or MIN_TRIAL_STEPS))

    def affordable_steps(self, steps_per_epoch: int | None, steps_left: int | None, candidates: int) -> int | str:
        """Each candidate's first-round steps within ``max_trial_share`` of the run's steps left, or why none fit.

        Args:
            steps_per_epoch: Training batches per epoch (``None`` when unknown).
            steps_left: Training batches left in the run at the decision (``None`` when unknown: no bound).
            candidates: How many candidates the trials compare.

        Returns:
            The steps (see :meth:`first_round_steps`, shortened to fit), or the reason the trials cannot fit.

        Example:
            >>> AutoFreeze().affordable_steps(7, steps_left=49, candidates=3)  # 12 of 49 steps: 4 per candidate
            4
            >>> AutoFreeze().affordable_steps(2, steps_left=14, candidates=3)
            'the trials would train 12 steps, over max_trial_share=0.25 of the 14 training steps left'
        """
        steps = self.first_round_steps(steps_per_epoch)
        if self.max_trial_share is None or steps_left is None:
            return steps
        cost = halving_cost(candidates, self.halving)
        fits = int(self.max_trial_share * steps_left) // cost
        least = min(MIN_TRIAL_STEPS, steps)
        if fits < least:
            return (
                f"the trials would train {least * cost} steps, over max_trial_share={self.max_trial_share:g} of the"
                f" {steps_left} training steps left"
            )
        return min(steps, fits)

    def _keep(self, plan: AutoFreezePlan) -> AutoFreezePlan:
        self.plan = plan
        return plan

    def trainable_mask(self, epoch: int, num_groups: int) -> list[bool]:  # noqa: D102
        if self.plan is None or epoch < self.plan.epoch:  # the probe: the new part alone
            return [index >= num_groups - self.new_groups for index in range(num_groups)]
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
            "depths": list(self.depths),
            "default": self.default,
            "trial_steps": self.trial_steps,
            "max_trial_share": self.max_trial_share,
            "halving": self.halving,
            "max_val_samples": self.max_val_samples,
            "min_val_samples": self.min_val_samples,
            "min_advantage": self.min_advantage,
            "layer_decay": self.layer_decay,
            "seed": self.seed,
            "new_groups": self.new_groups,
        }


def _is_depth(value: object) -> bool:
    return value == ALL or (is_int(value) and int(value) >= 0)


def _check_probe_epochs(probe_epochs: int | float) -> int | float:
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
    return probe_epochs
