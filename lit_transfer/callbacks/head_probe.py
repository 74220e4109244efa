"""HeadProbe: start a fit from a classifier fitted to the frozen backbone's features of a few augmented views.

The first stage of LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") is a linear probe trained to convergence, as in the fixed-feature protocol of Kornblith et
al. (2019): logistic regression on the pretrained model's features, solved with L-BFGS. Trained by epochs of
augmented images instead, the head of a small dataset is far from converged after the few epochs a recipe gives it
(every epoch runs the whole backbone), and the fine-tune starts from that head.

Before the first training step of a new ``fit`` this callback runs the backbone once over ``views`` augmented views
of the training set (the training loader's own augmentation, seeded per view; under DDP each rank computes its
share and the ranks exchange them), fits the classifier to them with full-batch L-BFGS on the model's own training
loss plus an L2 penalty on the weights, starting from zero, and copies the result into the model's classifier.
Rank 0's solution is broadcast, so the replicas start identical. The global random generators and the dataset's
augmentation seeding are restored afterwards: the run draws what it would have drawn without the probe.

A resumed ``fit`` (``ckpt_path``) does not probe again: the classifier, like every weight, is the checkpoint's.
SIGTERM during the probe stops the command after the batch of features in progress (every DDP process after the
same one, with :class:`~lit_transfer.callbacks.SynchronizedStop`): no training step has run, so there is nothing to
save or resume, and the command is started again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_transfer._compat import unwrapped_sampler
from lit_transfer.backbones import linear_classifier
from lit_transfer.dataset_features import Extract, compute_features
from lit_transfer.errors import check_positive_int, is_number

__all__ = ["HeadProbe", "fit_linear_head"]

VIEW_SEED = 0x5EED
"""Offset of the views' loader seeds (their workers' augmentation seeds)."""

MAX_WEIGHT_GROUPS = 1000
"""Distinct sample weights a weighted fit takes (one loss term per weight)."""


def fit_linear_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    out_features: int,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    l2: float,
    max_iter: int,
    sample_weights: torch.Tensor | None = None,
) -> tuple[nn.Linear, float, float]:
    """A linear layer minimising ``loss(layer(features), targets) + l2 / 2 * |weight|^2``, by full-batch L-BFGS.

    Args:
        features: ``(N, D)`` float features.
        targets: The targets ``loss`` takes for ``N`` outputs.
        out_features: Outputs of the layer.
        loss: The training loss of raw outputs against targets, a mean over the samples.
        l2: Strength of the L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations at most.
        sample_weights: ``(N,)`` weights of the samples (how often a weighted sampler draws each): the loss term is
            then their weighted mean, exactly, as the mean loss of each group of equally weighted samples times
            the group's share of the total weight (at most :data:`MAX_WEIGHT_GROUPS` distinct weights).

    Raises:
        ValueError: For more than :data:`MAX_WEIGHT_GROUPS` distinct sample weights.

    Returns:
        The fitted layer (float32, on the features' device), the loss before (zero weights) and after.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
        >>> y = torch.tensor([0, 1, 0, 1])
        >>> head, before, after = fit_linear_head(x, y, 2, nn.functional.cross_entropy, 1e-3, 100)
        >>> head(x).argmax(dim=1).tolist(), after < before
        ([0, 1, 0, 1], True)
    """
    layer = nn.Linear(features.shape[1], out_features, device=features.device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)

    groups = _weight_groups(sample_weights)

    def objective() -> torch.Tensor:
        penalty = 0.5 * l2 * layer.weight.pow(2).sum()
        if groups is None:
            return loss(layer(features), targets) + penalty
        terms = [share * loss(layer(features[index]), targets[index]) for index, share in groups]
        return torch.stack(terms).sum() + penalty

    with torch.no_grad():
        before = float(objective())
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        after = float(objective())
    return layer.requires_grad_(False), before, after


def _weight_groups(sample_weights: torch.Tensor | None) -> list[tuple[torch.Tensor, float]] | None:
    """The samples of each distinct weight and that group's share of the total weight; ``None``: unweighted."""
    if sample_weights is None:
        return None
    values, group_of = _distinct_weights(sample_weights)
    total = float(sample_weights.double().sum())
    groups = []
    for g, value in enumerate(values.tolist()):
        index = torch.nonzero(group_of == g).flatten()
        groups.append((index, value * len(index) / total))
    return groups


def _distinct_weights(sample_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct weights and each sample's index among them; refused beyond :data:`MAX_WEIGHT_GROUPS`."""
    values, group_of = torch.unique(sample_weights.double(), return_inverse=True)
    if len(values) > MAX_WEIGHT_GROUPS:
        raise ValueError(
            f"`probe_views` fits the classifier to the training sampler's distribution, but its weights take"
            f" {len(values)} distinct values (at most {MAX_WEIGHT_GROUPS}: e.g. one per class). Set `probe_views: 0`."
        )
    return values, group_of


def _sample_weights(loader: DataLoader[Any]) -> torch.Tensor | None:
    """Per-sample weights of ``loader``'s sampler, one per sample of its dataset, if it draws by weight; else ``None``.

    A :class:`~lit_transfer.data.samplers.BalancedSampler` or torch's ``WeightedRandomSampler`` (also as Lightning
    wraps it under DDP) draws by weight.
    """
    sampler = getattr(loader.batch_sampler, "sampler", None) or loader.sampler
    weights = getattr(unwrapped_sampler(sampler), "weights", None)
    size = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None  # an iterable one is refused later
    if not isinstance(weights, torch.Tensor) or weights.shape != (size,):
        return None
    return weights.detach().double().cpu()


def _training_loader(trainer: pl.Trainer) -> DataLoader[Any]:
    """The fit's training loader, refused unless it is one torch ``DataLoader``."""
    loader = trainer.train_dataloader
    if not isinstance(loader, DataLoader):
        raise ValueError(
            f"`probe_views` needs the training data as one torch `DataLoader`, got {type(loader).__name__}."
            " Set `probe_views: 0` for this data."
        )
    return loader


class HeadProbe(Callback):
    """Fit the classifier to the frozen backbone's features of ``views`` augmented views before a fit trains.

    :class:`~lit_transfer.TransferClassifier` and :class:`~lit_transfer.TransferRegressor` add it
    (``probe_views``). Its module must have a ``backbone`` (a timm model whose classifier is one ``nn.Linear``) and
    the task hooks ``targets_for_loss`` and ``loss`` of :class:`~lit_transfer.models.base.TransferModule`.

    Args:
        views: Augmented views of the training set the classifier is fitted to (the training loader's augmentation,
            seeded per view; without augmentation every view is the same).
        extract: Maps a batch of images to the classifier's inputs, the backbone's pre-logit features in eval mode
            without gradients (:func:`lit_transfer.models.frozen_features.frozen_features`).
        l2: L2 penalty on the classifier's weights (the loss is a mean over the samples).
        max_iter: L-BFGS iterations at most.
    """

    def __init__(self, views: int, extract: Extract, l2: float = 1e-3, max_iter: int = 100) -> None:
        check_positive_int("views", views)
        if not is_number(l2) or l2 < 0:
            raise ValueError(f"`l2` must be a number >= 0, got {l2!r}.")
        check_positive_int("max_iter", max_iter)
        self.views = int(views)
        self.extract = extract
        self.l2 = float(l2)
        self.max_iter = int(max_iter)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is not None:  # resumed: the classifier is the checkpoint's
            return
        module = cast("Any", pl_module)
        classifier = linear_classifier(module.backbone)  # a TransferModule checked it at construction
        if classifier is None:
            raise ValueError(
                f"`probe_views` needs a timm backbone whose classifier is one linear layer; the"
                f" {type(module.backbone).__name__} has another head. Set `probe_views: 0`."
            )
        loader = _training_loader(trainer)
        weights = _sample_weights(loader)
        if weights is not None:
            _distinct_weights(weights)  # refused before the feature pass, not after it
        with isolate_rng(include_cuda=True):
            features, targets = self._view_features(trainer, loader)
            layer, before, after = fit_linear_head(
                features,
                module.targets_for_loss(targets, 0),
                classifier.out_features,
                lambda outputs, y: module.loss(outputs, y, "train"),
                self.l2,
                self.max_iter,
                sample_weights=None if weights is None else weights.repeat(self.views),
            )
        weight, bias = trainer.strategy.broadcast((layer.weight.cpu(), layer.bias.cpu()), src=0)
        with torch.no_grad():
            classifier.weight.copy_(weight)
            classifier.bias.copy_(bias)
        weighted = "" if weights is None else ", weighted as the sampler draws them"
        rank_zero_info(
            f"HeadProbe: classifier fitted to {len(features)} features ({self.views} view(s) of"
            f" {len(features) // self.views} training samples{weighted}):"
            f" training loss {before:.3g} -> {after:.3g}"
        )

    def _view_features(self, trainer: pl.Trainer, loader: DataLoader[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-logit features and targets of every view of ``loader``'s dataset, views stacked."""
        dataset = loader.dataset
        set_epoch = getattr(dataset, "set_epoch", None)
        epoch = getattr(dataset, "epoch", None)
        features, targets = [], []
        for view in range(self.views):
            if callable(set_epoch):  # the pipeline's seed in this process (workers reseed from the generator)
                set_epoch(view, trainer.global_rank)
            generator = torch.Generator().manual_seed(VIEW_SEED + view)
            cached = compute_features(
                trainer,
                loader,
                self.extract,
                "train",
                generator,
                setting=("probe_views", "probe_views: 0"),
                stop_on_sigterm=True,
                progress=f"HeadProbe: features of view {view + 1}/{self.views}",
            )
            features.append(cached.features)
            targets.append(cached.labels)
        if callable(set_epoch) and isinstance(epoch, int):
            set_epoch(epoch, trainer.global_rank)
        return torch.cat(features), torch.cat(targets)
