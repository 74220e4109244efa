"""The candidates :class:`~lit_transfer.freezing.AutoFreeze` tries, and successive halving over them.

Pure logic, no Trainer: a candidate is a mask over the layer groups with per-group learning-rate multipliers, and
:func:`successive_halving` drives any ``run(candidate, steps)`` that trains a candidate further and returns its
per-sample validation losses (:mod:`lit_transfer.freezing.measure` runs them on the Trainer's data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Candidate",
    "TrialResult",
    "depth_candidates",
    "halving_cost",
    "halving_rounds",
    "paired_standard_error",
    "successive_halving",
]


@dataclass(frozen=True)
class Candidate:
    """One way to fine-tune: which groups train and at what learning-rate multiplier.

    Attributes:
        name: ``"linear probe"``, ``"<first trained group> + head"`` or ``"all groups"``.
        mask: Which groups train (stem first, the head last).
        lr_mults: Each group's multiplier (1 for frozen groups and the head).
    """

    name: str
    mask: tuple[bool, ...]
    lr_mults: tuple[float, ...]

    @property
    def plan(self) -> tuple[tuple[bool, ...], tuple[float, ...]]:
        """``(mask, lr_mults)``."""
        return self.mask, self.lr_mults


@dataclass(frozen=True)
class TrialResult:
    """A candidate's last trial.

    Attributes:
        name: The candidate's name.
        steps: Optimizer steps it trained in the trials, all rounds together.
        val_loss: Mean validation loss after them.
        paired_se: Standard error of the mean per-sample difference between its losses and the lowest-loss
            candidate's (0 for that one).
    """

    name: str
    steps: int
    val_loss: float
    paired_se: float


def depth_candidates(
    group_names: Sequence[str], depths: Sequence[int | str], layer_decay: float, new_groups: int = 1
) -> list[Candidate]:
    """One candidate per depth (groups below the head that train; ``"all"`` every one), duplicates removed.

    A trained group ``i`` steps below the head gets the multiplier ``layer_decay ** i``, unrounded (the rate a
    classifier's own ``layer_decay`` gives that group, to the last bit). The last ``new_groups`` groups are the
    model's new part (the head; a segmenter's decoder and head) and train in every candidate at the full rate; depths
    count the groups below them.

    Example:
        >>> [(c.name, c.lr_mults) for c in depth_candidates(["stem", "layer1", "head"], [0, 1, 5, "all"], 0.5)]
        [('linear probe', (1.0, 1.0, 1.0)), ('layer1 + head', (1.0, 0.5, 1.0)), ('all groups', (0.25, 0.5, 1.0))]
    """
    below = len(group_names) - new_groups
    top = "head" if new_groups == 1 else " + ".join(group_names[below:])
    seen: set[tuple[bool, ...]] = set()
    candidates: list[Candidate] = []
    for depth in depths:
        count = below if depth == "all" else min(int(depth), below)
        mask = (*tuple(index >= below - count for index in range(below)), *(True,) * new_groups)
        if mask in seen:
            continue
        seen.add(mask)
        mults = (*tuple(layer_decay ** (below - i) if mask[i] else 1.0 for i in range(below)),)
        mults += (1.0,) * new_groups
        if count == 0:
            name = "linear probe" if new_groups == 1 else top
        elif count == below:
            name = "all groups"
        else:
            name = f"{group_names[below - count]}{'' if count == 1 else '..'} + {top}"
        candidates.append(Candidate(name, mask, mults))
    return candidates


def paired_standard_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standard error of the mean of ``a - b`` (per-sample losses of two candidates on the same samples)."""
    diff = (a.double() - b.double()).flatten()
    if diff.numel() < 2:
        return 0.0
    return float(diff.std(unbiased=True) / math.sqrt(diff.numel()))


def halving_rounds(candidates: int, halving: int) -> list[int]:
    """How many candidates :func:`successive_halving` trains in each round.

    All in the first, then the best ``ceil(n / halving)`` of the last round's ``n``, until one would be left.

    Example:
        >>> halving_rounds(3, 3), halving_rounds(3, 2), halving_rounds(9, 3)
        ([3], [3, 2], [9, 3])
    """
    rounds = [candidates]
    while rounds[-1] > 1 and math.ceil(rounds[-1] / halving) > 1:
        rounds.append(math.ceil(rounds[-1] / halving))
    return rounds


def halving_cost(candidates: int, halving: int) -> int:
    """Optimizer steps :func:`successive_halving` trains in all, per step of its first round.

    Round ``r`` of :func:`halving_rounds` trains each of its candidates ``halving ** r`` times the first round's steps.

    Example:
        >>> halving_cost(3, 3)  # one round: three candidates
        3
        >>> halving_cost(3, 2)  # three candidates, then two at twice the steps
        7
    """
    return sum(count * halving**r for r, count in enumerate(halving_rounds(candidates, halving)))


def successive_halving(
    candidates: Sequence[Candidate],
    run: Callable[[Candidate, int], torch.Tensor],
    first_steps: int,
    halving: int,
) -> list[TrialResult]:
    """Successive halving (Jamieson & Talwalkar, 2016): try all, keep the best ``ceil(n / halving)``, repeat.

    Each round trains every surviving candidate ``steps`` more (``first_steps``, then ``halving`` times the last
    round's) through ``run(candidate, steps)``, which continues that candidate's own trial and returns its
    per-sample validation losses; the lowest mean loss ranks first (the order of ``candidates`` breaks ties).

    Returns:
        Every candidate's last result, the last round's best first, then the others by their own last round
        (later rounds first), each with its paired standard error against the best.

    Example:
        >>> import torch
        >>> speed = {"a": 0.1, "b": 0.5, "c": 0.3}
        >>> def run(c, steps):
        ...     run.trained[c.name] = run.trained.get(c.name, 0) + steps
        ...     return torch.full((4,), 1.0 - speed[c.name] * run.trained[c.name] / 8)
        >>> run.trained = {}
        >>> cands = [Candidate(n, (True,), (1.0,)) for n in "abc"]
        >>> [(r.name, r.steps) for r in successive_halving(cands, run, first_steps=2, halving=2)]
        [('b', 6), ('c', 6), ('a', 2)]
    """
    alive = list(candidates)
    trained = {c.name: 0 for c in alive}
    losses: dict[str, torch.Tensor] = {}
    eliminated: list[str] = []
    for index, count in enumerate(halving_rounds(len(alive), halving)):
        eliminated = [c.name for c in alive[count:]] + eliminated
        alive = alive[:count]
        steps = first_steps * halving**index
        for candidate in alive:
            losses[candidate.name] = run(candidate, steps).detach().double().flatten()
            trained[candidate.name] += steps
        alive.sort(key=lambda c: float(losses[c.name].mean()))
    order = [alive[0].name, *[c.name for c in alive[1:]], *eliminated]
    best = losses[order[0]]
    return [
        TrialResult(name, trained[name], float(losses[name].mean()), paired_standard_error(losses[name], best))
        for name in order
    ]
