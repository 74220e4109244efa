"""Seeded, stratified index splits and few-shot subsets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices per class: about ``fraction`` of each class is held out.

    A class with at least two samples keeps at least one and holds out at least one when ``fraction > 0``; a
    class with a single sample stays in the kept part. The result depends only on ``labels``, ``fraction`` and
    ``seed``.

    Args:
        labels: Class of every sample.
        fraction: Held-out fraction in ``[0, 1)``.
        seed: Seed of the per-class shuffles.

    Returns:
        ``(kept, held_out)`` sorted index lists.

    Example:
        >>> kept, held = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)
        >>> len(kept), len(held), sorted(l for l in [[0, 0, 0, 0, 1, 1, 1, 1][i] for i in held])
        (6, 2, [0, 1])
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"`val_fraction` must be in [0, 1), got {fraction!r}.")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    held: list[int] = []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        members = members[rng.permutation(len(members))]
        n_held = round(len(members) * fraction)
        if fraction > 0 and len(members) >= 2:
            n_held = min(max(n_held, 1), len(members) - 1)
        elif len(members) < 2:
            n_held = 0
        held.extend(members[:n_held].tolist())
        kept.extend(members[n_held:].tolist())
    return sorted(kept), sorted(held)


def few_shot(labels: Sequence[int] | np.ndarray, indices: Sequence[int], shots: int, seed: int) -> list[int]:
    """Pick ``shots`` indices per class from ``indices`` (all of a class when it has fewer), seeded.

    Args:
        labels: Class of every sample (indexed by the values in ``indices``).
        indices: Candidate sample indices.
        shots: Samples per class.
        seed: Seed of the choice.

    Returns:
        Sorted chosen indices.
    """
    if shots < 1:
        raise ValueError(f"`shots_per_class` must be a positive int or None, got {shots!r}.")
    rng = np.random.default_rng(seed)
    candidates = np.asarray(indices)
    cand_labels = np.asarray(labels)[candidates]
    chosen: list[int] = []
    for cls in np.unique(cand_labels):
        members = candidates[cand_labels == cls]
        chosen.extend(rng.choice(members, size=min(shots, len(members)), replace=False).tolist())
    return sorted(chosen)
