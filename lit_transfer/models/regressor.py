"""TransferRegressor: image regression (one or more real-valued targets) on a :class:`TransferModule`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_transfer.errors import is_int
from lit_transfer.freezing import FreezingPolicy
from lit_transfer.models.arguments import check_regressor_arguments, check_training_arguments
from lit_transfer.models.base import Split, TransferModule
from lit_transfer.models.metrics import regression_metrics
from lit_transfer.models.mixing import DenseMixup
from lit_transfer.models.optimization import LRSchedulerCallable, OptimizerCallable
from lit_transfer.models.targets import dense_targets
from lit_transfer.tasks import check_data_task, same_target_stats, target_names_of

__all__ = ["TransferRegressor"]


class TransferRegressor(TransferModule):
    """Image regressor fine-tuned from a timm backbone: ``num_outputs`` real values per image.

    It shares everything but the task with :class:`~lit_transfer.TransferClassifier` (see there for ``backbone``,
    ``pretrained``, ``freeze``, ``layer_decay``, ``optimizer``, ``lr_scheduler``, ``cache_features`` ...): the
    named layer-group optimizer, the freezing callbacks, per-batch reseeding for exact resume, the recorded
    preprocessing and the feature cache.

    Targets are float ``(N, num_outputs)``. A DataModule that standardises them (``standardize_targets=True``)
    hands ``target_stats`` (the training rows' mean and std) to the model; the head then learns standardised
    values and the loss is computed on them, while the metrics (``mae``, ``rmse`` over every output value, ``r2``
    averaged over outputs) and :meth:`predict_step` are in the targets' original units: the standardisation is
    undone first. ``forward`` returns the raw (standardised) head outputs.

    Args:
        backbone: timm model name, optionally with a pretrained tag.
        num_outputs: Number of regression targets (linked from the DataModule's ``num_outputs`` by the CLI).
        pretrained: ``True`` for hub weights, ``False`` for random init, or a local weights file.
        in_chans: Input channels.
        img_size: The input size (px) to build a backbone made for one input size for (ViT, DeiT, Swin, ...:
            timm's ``img_size``; pretrained position embeddings are resampled to it); ``None``: the architecture's
            own. Such a backbone refuses data of another size before training, naming both sizes.
        dynamic_img_size: Build a backbone made for one input size (ViT, DeiT, EVA, Swin, ...) to take any size
            divisible by its patch size (timm's ``dynamic_img_size``: position embeddings resampled at each forward
            pass): train at one size and predict at another, or change the data's size without rebuilding it.
            Refused, with the reason, by architectures without it.
        target_names: Names of the targets, stored in checkpoints (the DataModule's ``target_names``).
        target_stats: ``{"mean": [K floats], "std": [K floats]}`` of the training targets when the DataModule
            standardises them (its ``target_stats``), else ``None`` (targets used as given). Stored in checkpoints.
        loss: ``"mse"``, ``"l1"`` or ``"huber"`` (on standardised values when ``target_stats`` is given).
        huber_delta: Where the Huber loss turns from quadratic to linear.
        freeze: Freezing policy (as for the classifier).
        train_bn: Keep BatchNorm in frozen groups training.
        layer_decay: Layer-wise LR decay in ``(0, 1]``.
        frozen_lr_mult: LR factor for the groups frozen in the first epoch.
        drop_rate: Dropout before the head.
        drop_path_rate: Stochastic depth of the backbone.
        mixup_alpha: Mixup alpha (0 disables it): images by timm, targets mixed with the same weight.
        cutmix_alpha: CutMix alpha (0 disables it); targets are mixed with the pasted area's weight.
        optimizer: Callable building the optimizer from parameter groups (default AdamW, as for the classifier).
        lr_scheduler: Callable building the scheduler (default warmup then cosine, stepped every step).
        scheduler_interval: When a given ``lr_scheduler`` steps.
        warmup_epochs: Warmup of the default schedule.
        cache_features: Train a linear probe on features computed once (no augmentation).
        probe_views: Before a new fit trains, fit the linear head to the frozen backbone's features of this many
            augmented views of the training set (:class:`~lit_transfer.callbacks.HeadProbe`); 0: the fresh head.
        compile: Compile the backbone's forward with ``torch.compile``.
        channels_last: Use the channels-last memory format.

    Example:
        >>> model = TransferRegressor("test_resnet", num_outputs=2, pretrained=False,
        ...                           target_stats={"mean": [10.0, 0.0], "std": [2.0, 1.0]})
        >>> model.predict_step(torch.randn(3, 3, 32, 32), 0)["values"].shape
        torch.Size([3, 2])
    """

    default_task = "regression"
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self,
        backbone: str = "resnet18",
        num_outputs: int = 1,
        pretrained: bool | str = True,
        in_chans: int = 3,
        img_size: int | None = None,
        dynamic_img_size: bool = False,
        target_names: list[str] | None = None,
        target_stats: dict[str, list[float]] | None = None,
        loss: Literal["mse", "l1", "huber"] = "mse",
        huber_delta: float = 1.0,
        freeze: FreezingPolicy | str | dict[str, Any] = "freeze_unfreeze",
        train_bn: bool | None = None,
        layer_decay: float | None = None,
        frozen_lr_mult: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup_epochs: float = 1.0,
        cache_features: bool = False,
        probe_views: int = 0,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        check_regressor_arguments(num_outputs, target_names, target_stats, loss, huber_delta)
        check_training_arguments(layer_decay, mixup_alpha, cutmix_alpha, warmup_epochs)
        if target_stats is not None:  # plain floats: checkpoints load with weights_only=True
            target_stats = {key: [float(v) for v in target_stats[key]] for key in ("mean", "std")}
        super().__init__(optimizer, lr_scheduler)

    # ------------------------------------------------------------- task hooks
    @property
    def target_stats(self) -> dict[str, list[float]] | None:
        """The training targets' ``{"mean": [...], "std": [...]}`` the model undoes, or ``None``."""
        stats = self.hparams.get("target_stats")
        return {key: list(stats[key]) for key in ("mean", "std")} if stats else None

    @property
    def target_names(self) -> list[str] | None:
        """The targets' names, when given."""
        names = self.hparams.get("target_names")
        return [str(n) for n in names] if names else None

    def head_size(self) -> int:
        """``num_outputs`` values."""
        return int(self.hparams["num_outputs"])

    def configure_task(self) -> None:
        """The loss, the mixup, the metrics and the standardisation to undo."""
        hp = self.hparams
        self.loss_fn: nn.Module = {
            "mse": nn.MSELoss(),
            "l1": nn.L1Loss(),
            "huber": nn.HuberLoss(delta=float(hp["huber_delta"])),
        }[hp["loss"]]
        if hp["mixup_alpha"] > 0 or hp["cutmix_alpha"] > 0:
            self.mixup = DenseMixup(hp["mixup_alpha"], hp["cutmix_alpha"])
        width = self.head_size()
        stats = self.target_stats or {"mean": [0.0] * width, "std": [1.0] * width}
        self.register_buffer("target_mean", torch.tensor(stats["mean"]), persistent=False)
        self.register_buffer("target_std", torch.tensor(stats["std"]), persistent=False)
        names = target_names_of(self)  # per-target MAE for several targets: `val_mae` mixes their units
        self.train_metrics = regression_metrics(width, "train_", names)
        self.val_metrics = regression_metrics(width, "val_", names)
        self.test_metrics = regression_metrics(width, "test_", names)

    def check_data(self, datamodule: Any, stage: str) -> None:
        """The DataModule's ``task``, ``num_outputs``, ``target_names`` and (outside ``predict``) ``target_stats``.

        Raises:
            ValueError: Another task or number of outputs; other target names, or other target statistics (the
                metrics would undo another standardisation than the targets had) outside ``predict``.
        """
        check_data_task("regression", datamodule)
        kind = type(datamodule).__name__
        theirs = getattr(datamodule, "num_outputs", None)
        ours = self.head_size()
        if is_int(theirs) and theirs != ours:
            raise ValueError(
                f"The DataModule ({kind}) has {theirs} regression targets but the model was built with"
                f" `num_outputs={ours}`. Build the model with `num_outputs=datamodule.num_outputs` (and"
                " `target_names`, `target_stats`; the CLI links them), or use the DataModule the model was trained on."
            )
        names, data_names = self.target_names, getattr(datamodule, "target_names", None)
        if names and data_names and [str(n) for n in data_names] != names:
            message = (
                f"The model's `target_names` {names} differ from the DataModule's ({kind}) {list(data_names)}. Build"
                " the model with `target_names=datamodule.target_names`, or use the DataModule it was trained on."
            )
            if stage != "predict":
                raise ValueError(message)
            rank_zero_warn(message + " Predictions are named with the model's targets.")
        if stage == "predict" or not hasattr(datamodule, "target_stats"):
            return
        data_stats = datamodule.target_stats
        if not same_target_stats(self.target_stats, data_stats):
            raise ValueError(
                f"The DataModule ({kind}) standardises its targets with `target_stats={data_stats!r}` but the model"
                f" undoes `target_stats={self.target_stats!r}`: metrics and predictions would be in the wrong units."
                " Build the model with `target_stats=datamodule.target_stats` (the CLI links it), or give the"
                " DataModule the model's standardisation."
            )

    def targets_for_loss(self, targets: Any, batch_idx: int) -> torch.Tensor:
        """Float targets ``(N, num_outputs)`` (``(N,)`` taken for one output), checked; finite at batch 0."""
        return dense_targets(targets, "regression", self.head_size(), check_values=batch_idx == 0)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, split: Split, mixed: bool = False) -> torch.Tensor:
        """The chosen loss on standardised values, in float32."""
        return self.loss_fn(outputs.float(), targets.float())  # type: ignore[no-any-return]

    def original_units(self, values: torch.Tensor) -> torch.Tensor:
        """Standardised values back in the targets' units: ``values * std + mean`` (as given without stats)."""
        return values.float() * self.target_std + self.target_mean

    def update_metrics(self, split: Split, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Update and log ``<split>_mae``, ``_rmse``, ``_r2`` (and ``_mae_<target>``) in original units."""
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[split]
        metrics.update(self.original_units(outputs), self.original_units(targets))
        if split == "train":
            self.log_metrics_once(metrics)
        else:
            self.log_dict(metrics, on_epoch=True, prog_bar=split == "val")  # torchmetrics objects sync themselves

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"values": (N, num_outputs)}`` in the targets' original units."""
        return {"values": self.original_units(self(self.images_of(batch)))}
