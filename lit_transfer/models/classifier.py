"""TransferClassifier: a timm backbone with a new head, freezing policies, layer decay and metrics."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import MetricCollection

from lit_transfer.backbones import backbone_data_config, create_backbone
from lit_transfer.callbacks.feature_cache import FeatureCache
from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.callbacks.non_finite_guard import NonFiniteLossGuard
from lit_transfer.errors import UnsafeFileError
from lit_transfer.freezing import FreezingPolicy, FullFineTune, resolve_policy
from lit_transfer.layer_groups import LayerGroup
from lit_transfer.layer_groups import layer_groups as group_layers
from lit_transfer.models.checks import check_arguments, check_checkpoint_fits, check_classes, check_unaugmented
from lit_transfer.models.feature_cache import check_cacheable, frozen_features
from lit_transfer.models.metrics import classification_metrics
from lit_transfer.models.optimization import LRSchedulerCallable, OptimizerCallable, configure_optimization
from lit_transfer.models.reseeding import BatchReseeding
from lit_transfer.models.trained_preprocessing import TrainedPreprocessing

__all__ = ["TransferClassifier"]


class TransferClassifier(LightningModule):
    """Image classifier fine-tuned from a timm backbone.

    The optimizer is built once with one named parameter group per timm layer group (``stem``, ``layer1`` ...
    ``head``), frozen groups included, with layer-wise LR decay multiplied into each group's ``lr``. Freezing is
    applied by a :class:`~lit_transfer.callbacks.LayerFreezing` callback that this module adds to the Trainer.

    Args:
        backbone: timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        num_classes: Number of classes (linked from the DataModule by the CLI).
        pretrained: ``True`` for hub weights (cache first, fails fast offline), ``False`` for random init, or a
            local ``.safetensors``/``.pth``/``.ckpt`` file.
        in_chans: Input channels (pretrained stems are adapted).
        class_names: Names of the classes, stored in checkpoints for prediction.
        freeze: Freezing policy, as an object, a config dict or a name (``"freeze_unfreeze"``, ``"linear_probe"``,
            ``"gradual_unfreeze"``, ``"unfreeze_at_epochs"``, ``"full_fine_tune"``).
        train_bn: Keep BatchNorm in frozen groups training (overrides the policy's setting).
        layer_decay: Layer-wise LR decay in ``(0, 1]``: group ``i`` from the head trains at ``lr * layer_decay**i``.
        frozen_lr_mult: LR factor for the groups frozen in the first epoch (applied once they unfreeze).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth of the backbone (timm models that support it).
        label_smoothing: Label smoothing of the cross-entropy loss.
        mixup_alpha: timm ``Mixup`` alpha (0 disables mixup).
        cutmix_alpha: timm ``Mixup`` CutMix alpha (0 disables CutMix).
        optimizer: Callable building the optimizer from parameter groups (LightningCLI ``OptimizerCallable``);
            default ``AdamW(lr=1e-3, weight_decay=0.05)`` in torch's fastest implementation for the parameters'
            device (fused on CPU and CUDA; see :mod:`lit_transfer.models.optimization`). A given optimizer must hold
            every parameter it is handed, frozen ones included.
        lr_scheduler: Callable building a scheduler from the optimizer; default: linear warmup over
            ``warmup_epochs`` then cosine decay to 0, stepped every optimizer step
            (:class:`~lit_transfer.optim.WarmupCosineLR`, sized by ``trainer.estimated_stepping_batches``). A resume
            whose run is longer or shorter than the checkpoint's (e.g. a larger ``max_epochs``) keeps the steps done
            and follows the new run's plan from there, with a warning, instead of training at the old plan's final LR.
        scheduler_interval: When a given ``lr_scheduler`` steps: every ``"epoch"`` or every ``"step"``.
        warmup_epochs: Warmup of the default schedule.
        cache_features: With a linear probe and no training augmentation, compute the frozen backbone's features
            once at the start of ``fit`` and train and validate the classifier on them: epochs after the first
            neither load images nor run the backbone, and the batches (order, shuffling, DDP shards) are the same
            as without the cache. See :mod:`lit_transfer.models.feature_cache`.
        compile: Compile the backbone's forward with ``torch.compile`` (checkpoint keys stay unprefixed).
        channels_last: Use the channels-last memory format (faster convolutions on recent hardware).

    Resuming ``fit`` from a checkpoint draws the same dropout, drop-path and mixup numbers as the uninterrupted run:
    the global generators are reseeded before every training batch from a seed saved in the checkpoint (see
    :mod:`lit_transfer.models.reseeding`, which also says where the claim stops).

    Attributes:
        data_config: The preprocessing the model expects, as a timm-style dict of plain values (``input_size``
            ``[C, H, W]``, ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``). At ``fit`` it is
            recorded from the DataModule's ``resolved_config`` (any lit_transfer DataModule), saved in checkpoints
            under the top-level key ``"data_config"`` and restored on load, so export and prediction use the size and
            normalisation the model was trained with. Until then (plain DataLoaders, checkpoints written before this
            was recorded) it is the backbone's timm data config, and checkpoints do not carry it.
        layer_groups: The backbone's layer groups, stem first (see :mod:`lit_transfer.layer_groups`), computed once:
            the optimizer's param groups, the freezing callback and the feature cache all use this list.

    Example:
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="linear_probe")
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        pretrained: bool | str = True,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        freeze: FreezingPolicy | str | dict[str, Any] = "freeze_unfreeze",
        train_bn: bool | None = None,
        layer_decay: float | None = None,
        frozen_lr_mult: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup_epochs: float = 1.0,
        cache_features: bool = False,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        check_arguments(
            num_classes, class_names, layer_decay, label_smoothing, mixup_alpha, cutmix_alpha, warmup_epochs
        )
        self.policy = resolve_policy(freeze, train_bn=train_bn)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.hparams["freeze"] = self.policy.to_config()  # plain values: checkpoints load with weights_only=True
        self.hparams["pretrained"] = str(pretrained) if isinstance(pretrained, Path) else pretrained
        timm_kwargs: dict[str, Any] = {"drop_rate": drop_rate}
        if drop_path_rate is not None:
            timm_kwargs["drop_path_rate"] = drop_path_rate
        self.backbone = create_backbone(backbone, num_classes, pretrained, in_chans, **timm_kwargs)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.preprocessing = TrainedPreprocessing(backbone_data_config(self.backbone))
        self._optimizer_factory = optimizer
        self._scheduler_factory = lr_scheduler
        self._build_loss()
        self._train_metrics_logged = False
        self.reseeding = BatchReseeding()
        if cache_features:
            check_cacheable(self.policy, self.backbone, uses_mixup=self.mixup is not None)
        self.train_metrics = classification_metrics(num_classes, "train_")
        self.val_metrics = classification_metrics(num_classes, "val_")
        self.test_metrics = classification_metrics(num_classes, "test_")

    def _build_loss(self) -> None:
        hp = self.hparams
        self.mixup: Callable[..., Any] | None = None
        if hp["mixup_alpha"] > 0 or hp["cutmix_alpha"] > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            self.mixup = Mixup(
                mixup_alpha=hp["mixup_alpha"],
                cutmix_alpha=hp["cutmix_alpha"],
                label_smoothing=hp["label_smoothing"],
                num_classes=hp["num_classes"],
            )
            self.train_loss: nn.Module = SoftTargetCrossEntropy()
        else:
            self.train_loss = nn.CrossEntropyLoss(label_smoothing=hp["label_smoothing"])
        self.eval_loss = nn.CrossEntropyLoss()

    # ------------------------------------------------------------------ data
    @property
    def data_config(self) -> dict[str, Any]:
        """The preprocessing the model expects (see the class's Attributes)."""
        return self.preprocessing.config

    @data_config.setter
    def data_config(self, value: dict[str, Any]) -> None:
        self.preprocessing.config = value

    def setup(self, stage: str) -> None:
        """Check the DataModule against the model, record its preprocessing at ``fit``, set up the feature cache.

        Every stage: a DataModule's ``num_classes`` must equal the model's (else ``ValueError``), and its
        ``class_names``, when both have names, must be the model's in the same order (``ValueError``; a warning at
        ``predict``, whose outputs are named with the model's classes). ``fit`` records the DataModule's
        ``resolved_config`` as :attr:`data_config`; ``validate``/``test``/``predict`` warn when it differs from the
        recorded one in size, mean or std. With ``cache_features``, ``fit`` refuses a DataModule that augments.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        check_classes(self.hparams["num_classes"], self.hparams.get("class_names"), datamodule, stage)
        self.preprocessing.record(datamodule, stage)
        if stage == "fit" and self.hparams["cache_features"]:
            check_unaugmented(datamodule)

    # ------------------------------------------------------------- fit hooks
    def on_fit_start(self) -> None:
        """Draw this fit's seed of the per-batch reseeding (a resume keeps its checkpoint's), the same on all ranks."""
        self.reseeding.start(self.trainer)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed the global generators from ``(seed, epoch, batch, rank)``: the batch draws what it drew before."""
        self.reseeding.before_batch(self.current_epoch, batch_idx, self.global_rank)

    def on_train_epoch_start(self) -> None:
        """Log the epoch's training metrics at its first step."""
        self._train_metrics_logged = False

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the recorded preprocessing (``"data_config"``) and the reseeding seed (``"rng_seed"``)."""
        self.preprocessing.save(checkpoint)
        self.reseeding.save(checkpoint)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> TransferClassifier:  # type: ignore[override]
        """Rebuild the classifier from a checkpoint alone; pretrained weights are not fetched again.

        Args:
            checkpoint_path: Lightning checkpoint written by ``fit``.
            *args: Passed to :meth:`lightning.pytorch.LightningModule.load_from_checkpoint`.
            **kwargs: Overrides of saved hyper-parameters; ``pretrained`` defaults to ``False`` because the
                checkpoint already holds every weight, and ``weights_only`` to ``True`` (no arbitrary unpickling).

        Returns:
            The classifier, with the checkpoint's weights.
        """
        kwargs.setdefault("pretrained", False)
        kwargs.setdefault("weights_only", True)
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)  # type: ignore[return-value]
        except pickle.UnpicklingError as err:
            raise UnsafeFileError.for_file(checkpoint_path, err) from None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another backbone or head; restore the preprocessing and the reseeding seed.

        The checkpoint's ``"data_config"`` becomes :attr:`data_config` (a checkpoint without one keeps the backbone's
        config). Resuming ``fit`` keeps the config this run's DataModule gave at ``setup`` and warns when the two
        differ; loading for ``validate``/``test``/``predict`` warns when the DataModule's differs from the checkpoint's.
        """
        check_checkpoint_fits(self.state_dict(), checkpoint, self.hparams)
        self.preprocessing.restore(checkpoint, self._trainer)
        self.reseeding.restore(checkpoint)

    # ----------------------------------------------------------------- model
    @property
    def class_names(self) -> list[str]:
        """Class names (``"0"``, ``"1"``, ... when none were given)."""
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams["num_classes"])]

    @property
    def layer_groups(self) -> list[LayerGroup]:
        """The backbone's layer groups, computed once (again only if its parameters were replaced)."""
        key = tuple(id(p) for p in self.parameters())
        cached = self.__dict__.get("_layer_groups_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_layer_groups_cache"] = (key, group_layers(self.backbone))
        return cast("list[LayerGroup]", cached[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images ``(N, C, H, W)``."""
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.hparams["compile"]:
            compiled = self.__dict__.get("_compiled_forward")
            if compiled is None:  # kept out of the module tree: checkpoint keys gain no `_orig_mod.`
                compiled = self.__dict__["_compiled_forward"] = torch.compile(self.backbone.forward)
            return compiled(x)
        return self.backbone(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images, or of cached features (2-D, from :class:`FeatureCache`'s loaders) during ``fit``."""
        if not self.hparams["cache_features"] or x.ndim != 2:
            return self(x)
        features = nn.functional.dropout(x, p=self.hparams["drop_rate"], training=self.training)
        get_classifier = cast("Callable[[], nn.Module]", self.backbone.get_classifier)  # timm API, not on `nn.Module`
        return get_classifier()(features)

    def configure_callbacks(self) -> list[Callback]:
        """A guard against NaN/inf losses, the LayerFreezing callback that applies ``freeze``, the feature cache."""
        callbacks: list[Callback] = [NonFiniteLossGuard()]
        if not isinstance(self.policy, FullFineTune) or self.policy.train_bn:
            callbacks.append(LayerFreezing(self.policy))
        if self.hparams["cache_features"]:
            callbacks.append(FeatureCache(partial(frozen_features, self.backbone)))
        return callbacks

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """One optimizer over named layer groups (frozen ones included) and its LR schedule."""
        return configure_optimization(
            self.layer_groups,
            self.backbone,
            self.policy,
            self.hparams,
            self.trainer,
            optimizer=self._optimizer_factory,
            lr_scheduler=self._scheduler_factory,
        )

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy (or mixup soft-target) loss of one batch."""
        x, y = batch[0], batch[1]
        if self.mixup is not None and len(x) % 2 == 0:
            x, soft = self.mixup(x, y)
            loss = self.train_loss(self(x), soft)
        else:
            logits = self._logits(x)
            loss = (
                self.train_loss(logits, y)
                if self.mixup is None
                else nn.functional.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
            )
            if self.mixup is None:
                self.train_metrics.update(logits.detach(), y)
                if not self._train_metrics_logged:
                    # Metric objects are computed from their whole-epoch state at epoch end: registering them once
                    # per epoch is enough, and saves Lightning's per-call logging cost on every other step.
                    self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
                    self._train_metrics_logged = True
        # a mean over ranks: synced (one scalar all-reduce per step under DDP, nothing on one device)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        return loss

    def _evaluate(self, batch: Any, metrics: MetricCollection, prefix: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self._logits(x)
        loss = self.eval_loss(logits, y)
        metrics.update(logits, y)
        self.log(f"{prefix}loss", loss, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        self.log_dict(metrics, on_epoch=True, prog_bar=prefix == "val_")  # torchmetrics objects sync themselves
        return logits

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and metrics on a validation batch."""
        self._evaluate(batch, self.val_metrics, "val_")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and metrics on a test batch."""
        self._evaluate(batch, self.test_metrics, "test_")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Predicted class indices (``preds``) and class probabilities (``probs``)."""
        x = batch["image"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self(x).softmax(dim=-1)
        return {"preds": probs.argmax(dim=-1), "probs": probs}
