"""k-fold cross-validation of a trial: the training split cut into K stratified folds, fixed per study.

The hook is the DataModule's public datasets. After the DataModule's own ``setup`` (Lightning runs it before any
callback's ``setup``), :class:`FoldSplit` replaces ``train_dataset`` by the training split without fold ``k`` and
``val_dataset`` by fold ``k`` itself, drawn through the DataModule's evaluation transform. Everything downstream
(samplers, balanced sampling, the loaders, AutoFreeze's count of samples per class) reads those attributes, so any
DataModule whose training dataset has ``labels`` or, for segmentation, ``masks`` (and ``transform``, for the
evaluation copy) works unchanged; the package's DataModules all do. The DataModule's own validation split is not
used while a fold is trained.

Single-label data is split by class (scikit-learn's ``StratifiedKFold``); multi-label and regression targets
(rows of values) and segmentation masks (several classes in each) by a plain shuffled ``KFold``. The split is a
function of the labels, ``k`` and the seed alone: the search stores the seed in the study, so every trial and every
worker scores the same folds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from typing_extensions import override

from lit_transfer.errors import check_int

__all__ = ["FoldSplit", "FoldSubset", "fold_indices"]


def fold_indices(labels: Sequence[Any] | np.ndarray, folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``(train, held_out)`` index lists of each of ``folds`` folds, stratified by class for class labels.

    Args:
        labels: Class index per sample, or a row of target values per sample (multi-label, regression).
        folds: Number of folds K (at least 2).
        seed: Seed of the shuffle.

    Returns:
        K pairs of sorted index lists; the held-out parts partition the samples.

    Raises:
        ValueError: When K is below 2, above the sample count, or above the size of the smallest class.

    Example:
        >>> parts = fold_indices([0, 0, 0, 1, 1, 1], folds=3, seed=0)
        >>> [sorted(int(i) // 3 for i in held) for _, held in parts]  # one sample of each class per fold
        [[0, 1], [0, 1], [0, 1]]
    """
    check_int("--folds", folds, minimum=2, expected="an int of at least 2")
    array = np.asarray(labels)
    if len(array) < folds:
        raise ValueError(
            f"`--folds {folds}` needs at least {folds} training samples, the training split has {len(array)}."
        )
    from sklearn.model_selection import KFold, StratifiedKFold  # here: scikit-learn slows every command's start

    positions = np.arange(len(array))
    if array.ndim == 1:
        _, counts = np.unique(array, return_counts=True)
        if counts.min() < folds:
            raise ValueError(
                f"`--folds {folds}` needs at least {folds} training samples of every class; the smallest class has"
                f" {counts.min()}. Use fewer folds."
            )
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(positions, array)
    else:
        splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(positions)
    return [(sorted(int(i) for i in train), sorted(int(i) for i in held)) for train, held in splits]


class FoldSubset(Dataset):
    """The samples ``indices`` of ``dataset``, keeping its ``labels`` and its per-epoch augmentation seeding.

    Args:
        dataset: A lit_transfer dataset (``labels``, ``set_epoch``) or any map-style dataset.
        indices: Positions in ``dataset``.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        labels = getattr(dataset, "labels", None)
        self.labels: list[Any] | np.ndarray | None = None
        if isinstance(labels, np.ndarray):  # rows of target values
            self.labels = labels[self.indices]
        elif labels is not None:
            self.labels = [labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Forward the epoch to the dataset (its augmentation seeds)."""
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch, rank)


class FoldSplit(Callback):
    """Train on the training split without fold ``fold``, validate on fold ``fold``.

    Args:
        fold: Which fold is held out (0-based).
        folds: Number of folds K.
        seed: Seed of the split (the same for every trial of a study).
    """

    def __init__(self, fold: int, folds: int, seed: int) -> None:
        if not 0 <= fold < folds:
            raise ValueError(f"`fold` must be in [0, {folds}), got {fold!r}.")
        self.fold = int(fold)
        self.folds = int(folds)
        self.seed = int(seed)
        self.sizes: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fold={self.fold}, folds={self.folds}, seed={self.seed})"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule: Any = getattr(trainer, "datamodule", None)  # assigned by Lightning's data connector
        train = getattr(datamodule, "train_dataset", None)
        labels = getattr(train, "labels", None)
        masks = getattr(train, "masks", None)
        if labels is None and masks is not None:  # a mask holds several classes: no strata, a row per sample
            labels = np.asarray(masks, dtype=object).reshape(-1, 1)
        if train is None or labels is None or not hasattr(train, "transform"):
            raise ValueError(
                "`--folds` needs a DataModule whose `train_dataset` has `labels` (or `masks`) and a `transform` after"
                f" `setup`; {type(datamodule).__name__} gives {type(train).__name__}. Use one of lit_transfer.data's"
                " DataModules, or tune without `--folds`."
            )
        kept, held = fold_indices(labels, self.folds, self.seed)[self.fold]
        evaluation = copy.copy(train)
        evaluation.transform = datamodule.build_eval_transform()
        datamodule.train_dataset = FoldSubset(train, kept)
        datamodule.val_dataset = FoldSubset(evaluation, held)
        self.sizes = (len(kept), len(held))
        rank_zero_info(
            f"Fold {self.fold + 1} of {self.folds}: train {len(kept)}, val {len(held)} (of the training split)."
        )
