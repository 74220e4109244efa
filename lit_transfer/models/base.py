"""TransferModule: what every lit_transfer model shares, whatever its task.

A :class:`TransferModule` is a timm backbone with a fresh head, fine-tuned under a freezing policy: it builds the
backbone, records the preprocessing, computes the layer groups once, builds one optimizer with a named param group
per layer group (layer decay included), adds the :class:`~lit_transfer.callbacks.LayerFreezing`,
:class:`~lit_transfer.callbacks.non_finite_guard.NonFiniteLossGuard` and (for linear probes)
:class:`~lit_transfer.callbacks.feature_cache.FeatureCache` callbacks, reseeds the global generators before every
training batch, and loads checkpoints without unpickling objects.

What depends on the task is left to a subclass, through these hooks (torchgeo's ``BaseTask`` has the same shape):

* :meth:`TransferModule.head_size`: the number of head outputs.
* :meth:`TransferModule.configure_task`: build the loss, the mixup and the metric collections.
* :meth:`TransferModule.check_data`: check a DataModule against the model at ``setup``.
* :meth:`TransferModule.targets_for_loss`: check a batch's targets and shape them for the loss.
* :meth:`TransferModule.loss`: the loss of raw outputs against targets (hard, or mixed by mixup).
* :meth:`TransferModule.update_metrics`: update a split's metrics with raw outputs and targets.
* :meth:`TransferModule.predict_step`: what prediction returns.

:class:`~lit_transfer.TransferClassifier` and :class:`~lit_transfer.TransferRegressor` are the two subclasses.
``forward`` returns raw outputs (logits, or standardised values): what export writes.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import MetricCollection
from typing_extensions import Self

from lit_transfer.backbones import backbone_data_config, create_backbone, linear_classifier
from lit_transfer.callbacks.feature_cache import FeatureCache, serving_features
from lit_transfer.callbacks.head_probe import HeadProbe
from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.callbacks.non_finite_guard import NonFiniteLossGuard
from lit_transfer.callbacks.synchronized_stop import SynchronizedStop
from lit_transfer.errors import DataMismatchError, UnsafeFileError, is_int
from lit_transfer.files.checks import load_torch_file
from lit_transfer.freezing import FullFineTune, resolve_policy
from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.freezing.layer_groups import layer_groups as group_layers
from lit_transfer.models.arguments import check_auto_owns_its_rates
from lit_transfer.models.averaging_check import check_weight_averages
from lit_transfer.models.checkpoint_checks import check_checkpoint_fits
from lit_transfer.models.data_checks import check_unaugmented
from lit_transfer.models.frozen_features import (
    TrunkFeatures,
    check_cacheable,
    frozen_features,
    head_is_classifier,
    trains_classifier_only,
    trains_head_group_only,
)
from lit_transfer.models.input_size import check_input_size, dynamic_img_size_refused, img_size_refused
from lit_transfer.models.optimization import LRSchedulerCallable, OptimizerCallable, configure_optimization
from lit_transfer.models.reseeding import BatchReseeding
from lit_transfer.models.trained_preprocessing import TrainedPreprocessing

__all__ = ["Split", "TransferModule"]

Split = Literal["train", "val", "test"]

_OTHER_CHECKPOINT = "Load another checkpoint of the run (its best.ckpt, last.ckpt or on_exception.ckpt)."


class TransferModule(LightningModule):
    """A timm backbone with a new head, freezing policies, layer decay, reseeding and recorded preprocessing.

    The task classes declare their arguments once, in their own ``__init__``, check them, and call
    ``super().__init__(optimizer, lr_scheduler)``; this base saves every argument of the chain in ``hparams`` and
    builds from there (torchgeo's ``BaseTask`` pattern). The arguments every task class has:

    Args:
        optimizer: Callable building the optimizer from parameter groups (LightningCLI ``OptimizerCallable``);
            default ``AdamW(lr=1e-3, weight_decay=0.05)`` in torch's fastest implementation for the parameters'
            device (see :mod:`lit_transfer.models.optimization`). It must hold every parameter it is handed, frozen
            ones included.
        lr_scheduler: Callable building a scheduler from the optimizer; default: linear warmup over
            ``warmup_epochs`` then cosine decay to 0, stepped every optimizer step
            (:class:`~lit_transfer.optim.WarmupCosineLR`). A resume whose run is longer or shorter than the
            checkpoint's keeps the steps done and follows the new run's plan from there, with a warning.

    The shared arguments read from ``hparams`` (each task class documents them too, as its own arguments):
    ``backbone`` (timm name, optionally ``hf-hub:`` or with a pretrained tag), ``pretrained`` (``True`` for hub
    weights, ``False`` for random init, or a local weights file), ``in_chans``, ``img_size`` and
    ``dynamic_img_size`` (classifier and regressor), ``freeze`` (a policy object, config dict or name),
    ``train_bn``, ``layer_decay``, ``frozen_lr_mult``, ``drop_rate``, ``drop_path_rate``, ``scheduler_interval``,
    ``warmup_epochs``, ``cache_features``, ``probe_views``, ``compile``, ``channels_last``.

    Attributes:
        default_task: The task of a class without a ``task`` argument (see :func:`lit_transfer.tasks.model_task`).
        mixup: The training-batch mixer (timm ``Mixup`` or a subclass) or ``None``; set by :meth:`configure_task`.
    """

    default_task: ClassVar[str] = "multiclass"

    def __init__(self, optimizer: OptimizerCallable | None = None, lr_scheduler: LRSchedulerCallable | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        hp = self.hparams
        self.policy = resolve_policy(hp["freeze"], train_bn=hp["train_bn"])
        check_auto_owns_its_rates(self.policy, hp["layer_decay"], hp["frozen_lr_mult"])
        hp["freeze"] = self.policy.to_config()  # plain values: checkpoints load with weights_only=True
        pretrained = hp["pretrained"]
        hp["pretrained"] = str(pretrained) if isinstance(pretrained, Path) else pretrained
        timm_kwargs: dict[str, Any] = {"drop_rate": hp["drop_rate"]}
        if hp["drop_path_rate"] is not None:
            timm_kwargs["drop_path_rate"] = hp["drop_path_rate"]
        img_size = hp.get("img_size")
        if img_size is not None:
            timm_kwargs["img_size"] = img_size
        if hp.get("dynamic_img_size"):
            timm_kwargs["dynamic_img_size"] = True
        try:
            self.backbone = self.build_network(timm_kwargs)
        except TypeError as err:
            refused = dynamic_img_size_refused(hp["backbone"], err) if hp.get("dynamic_img_size") else None
            if refused is None and img_size is not None:
                refused = img_size_refused(hp["backbone"], img_size, err)
            if refused is None:
                raise
            raise refused from err
        if hp["channels_last"]:
            self.backbone.to(memory_format=torch.channels_last)
        self.preprocessing = TrainedPreprocessing(backbone_data_config(self.backbone))
        self._optimizer_factory = optimizer
        self._scheduler_factory = lr_scheduler
        self.mixup: Callable[..., Any] | None = None
        self.configure_task()
        self._train_metrics_logged = False
        self.reseeding = BatchReseeding()
        self.weights_from_checkpoint = False  # set when a checkpoint's weights are loaded
        if hp["cache_features"]:
            check_cacheable(self.policy, self.backbone, uses_mixup=self.mixup is not None)
        self._caches_trunk = bool(hp["cache_features"]) and not head_is_classifier(self.backbone)
        _check_probe_views(hp.get("probe_views", 0), self.backbone, hp["backbone"])

    @property
    def task(self) -> str:
        """The task: the ``task`` argument of a class that has one, else :attr:`default_task`."""
        return str(self.hparams.get("task", self.default_task))

    # ------------------------------------------------------------- task hooks
    def build_network(self, timm_kwargs: dict[str, Any]) -> nn.Module:
        """The network ``forward`` runs, stored as ``self.backbone``: a timm classifier with a :meth:`head_size` head.

        A task whose network is more than a timm classifier (the segmenter: a timm encoder and a decoder) overrides
        this and :meth:`group_network`.

        Args:
            timm_kwargs: ``drop_rate`` and ``drop_path_rate`` for ``timm.create_model``.
        """
        hp = self.hparams
        return create_backbone(hp["backbone"], self.head_size(), hp["pretrained"], hp["in_chans"], **timm_kwargs)

    def group_network(self) -> list[LayerGroup]:
        """The layer groups of ``self.backbone``, stem first, head last (timm's ``group_matcher`` groups)."""
        return group_layers(self.backbone)

    def head_size(self) -> int:
        """Number of outputs of the head (read from ``self.hparams``, already saved when this is called)."""
        raise NotImplementedError

    def configure_task(self) -> None:
        """Build the loss, ``self.mixup`` and the metrics (the backbone exists when this is called)."""
        raise NotImplementedError

    def check_data(self, datamodule: Any, stage: str) -> None:
        """Refuse a DataModule (``None`` for plain DataLoaders) that does not fit the model, with a clear error."""

    def targets_for_loss(self, targets: Any, batch_idx: int) -> torch.Tensor:
        """A batch's targets checked (shape and dtype; values at batch 0) and shaped as :meth:`loss` takes them."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, split: Split, mixed: bool = False) -> torch.Tensor:
        """Loss of raw outputs against targets; ``mixed``: the targets were mixed by :attr:`mixup`."""
        raise NotImplementedError

    def update_metrics(self, split: Split, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Update and register for logging the metrics of ``split`` (``self.log_dict`` of torchmetrics objects)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data
    @property
    def data_config(self) -> dict[str, Any]:
        """The preprocessing the model expects (see :class:`~lit_transfer.TransferClassifier`'s Attributes)."""
        return self.preprocessing.config

    @data_config.setter
    def data_config(self, value: dict[str, Any]) -> None:
        self.preprocessing.config = value

    def setup(self, stage: str) -> None:
        """Check the DataModule against the model, record its preprocessing at ``fit``, set up the feature cache.

        Every stage: :meth:`check_datamodule` (input size, task, class count and names, outputs; with
        ``cache_features``, ``fit`` refuses a DataModule that augments). ``fit`` records the DataModule's
        ``resolved_config`` as :attr:`data_config`; ``validate``/``test``/``predict`` warn when it differs from the
        recorded one in size, mean or std.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        self.check_datamodule(datamodule, stage)
        self.preprocessing.record(datamodule, stage)

    def check_datamodule(self, datamodule: Any, stage: str) -> None:
        """Refuse a DataModule this model cannot run ``stage`` on, with an error that names the fix.

        The checks of :meth:`setup`, which need nothing but the two objects: the backbone's input size against the
        data's (:mod:`lit_transfer.models.input_size`), :meth:`check_data` (task, class count and names, outputs)
        and, at ``fit`` with ``cache_features``, a DataModule that augments. The ``lit-transfer`` command runs them
        before it builds the Trainer as well, so a refused run leaves no run folder behind.

        Args:
            datamodule: The DataModule (``None`` for plain DataLoaders: only the model's own checks apply).
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            DataMismatchError: The DataModule does not fit the model; the message names both sides and the fix.
        """
        hp = self.hparams
        try:
            check_input_size(self.backbone, hp["backbone"], datamodule, hp["in_chans"], hp.get("img_size"))
            self.check_data(datamodule, stage)
            if stage == "fit" and hp["cache_features"]:
                check_unaugmented(datamodule)
        except ValueError as err:
            if type(err) is not ValueError:  # already a class of its own (a corrupt file, ...)
                raise
            raise DataMismatchError(str(err)) from err  # every check's refusal, as one class callers can tell apart

    # ------------------------------------------------------------- fit hooks
    def on_fit_start(self) -> None:
        """Draw this fit's seed of the per-batch reseeding, the same on all ranks; check a weight average's span.

        A resume keeps its checkpoint's seed. A weight average the fit's results will not reflect gets a warning
        (:mod:`lit_transfer.models.averaging_check`).
        """
        self.reseeding.start(self.trainer)
        check_weight_averages(self.trainer, self)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed the global generators from ``(seed, epoch, batch, rank)``: the batch draws what it drew before."""
        self.reseeding.before_batch(self.current_epoch, batch_idx, self.global_rank)

    def on_train_epoch_start(self) -> None:
        """Log the epoch's training metrics at its first step."""
        self._train_metrics_logged = False

    # ----------------------------------------------------------------- copies
    def __getstate__(self) -> dict[str, Any]:
        """LightningModule's state (no Trainer), without the compiled forward: it runs this module's backbone."""
        state = super().__getstate__()
        state.pop("_compiled_forward", None)  # a copy compiles its own at its first forward
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """A deep copy that shares the optimizer and scheduler factories, with no Trainer and no compiled forward.

        Lightning's weight averaging (``EMAWeightAveraging``) deep-copies the module inside ``fit``. The command
        line's factories are jsonargparse callables that, under ``strategy: ddp``, reach objects a copy cannot take
        (locks of the launcher's worker processes). A factory only builds optimizers, so the copy uses the same one.
        """
        for factory in (self._optimizer_factory, self._scheduler_factory):
            if factory is not None:
                memo[id(factory)] = factory
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return copied

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the recorded preprocessing (``"data_config"``) and the reseeding seed (``"rng_seed"``)."""
        self.preprocessing.save(checkpoint)
        self.reseeding.save(checkpoint)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Self:  # type: ignore[override]
        """Rebuild the model from a checkpoint alone; pretrained weights are not fetched again.

        Args:
            checkpoint_path: Lightning checkpoint written by ``fit``.
            *args: Passed to :meth:`lightning.pytorch.LightningModule.load_from_checkpoint`.
            **kwargs: Overrides of saved hyper-parameters; ``pretrained`` defaults to ``False`` because the
                checkpoint already holds every weight, and ``weights_only`` to ``True`` (no arbitrary unpickling).

        Returns:
            The model, with the checkpoint's weights.

        Raises:
            CorruptFileError: The file is empty, cut short or not a PyTorch file (named, with the fix).
            UnsafeFileError: The file holds pickled objects that a weights-only load refuses.
        """
        kwargs.setdefault("pretrained", False)
        kwargs.setdefault("weights_only", True)
        if isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_file():
            load_torch_file(checkpoint_path, hint=_OTHER_CHECKPOINT, mmap=True)  # a broken file: one line naming it
        try:
            return cast("Self", super().load_from_checkpoint(checkpoint_path, *args, **kwargs))
        except pickle.UnpicklingError as err:
            raise UnsafeFileError.for_file(checkpoint_path, err) from None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another backbone or head; restore the preprocessing and the reseeding seed.

        The checkpoint's ``"data_config"`` becomes :attr:`data_config` (a checkpoint without one keeps the backbone's
        config). Resuming ``fit`` keeps the config this run's DataModule gave at ``setup`` and warns when the two
        differ; loading for ``validate``/``test``/``predict`` warns when the DataModule's differs from the checkpoint's.
        """
        check_checkpoint_fits(self.state_dict(), checkpoint, self.hparams, self.describe_head())
        self.preprocessing.restore(checkpoint, self._trainer)
        self.reseeding.restore(checkpoint)
        self.weights_from_checkpoint = True  # trained weights, whatever `pretrained` says

    def describe_head(self) -> str:
        """The head in words, for error messages (e.g. ``"3 classes"``)."""
        return f"{self.head_size()} outputs"

    # ----------------------------------------------------------------- model
    @property
    def layer_groups(self) -> list[LayerGroup]:
        """The backbone's layer groups, computed once (again only if its parameters were replaced)."""
        key = tuple(id(p) for p in self.parameters())
        cached = self.__dict__.get("_layer_groups_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_layer_groups_cache"] = (key, self.group_network())
        return cast("list[LayerGroup]", cached[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head outputs (logits, or standardised values) for a batch of images ``(N, C, H, W)``."""
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.hparams["compile"]:
            compiled = self.__dict__.get("_compiled_forward")
            if compiled is None:  # kept out of the module tree: checkpoint keys gain no `_orig_mod.`
                compiled = self.__dict__["_compiled_forward"] = torch.compile(self.backbone.forward)
            return cast("torch.Tensor", compiled(x))
        return cast("torch.Tensor", self.backbone(x))

    def outputs_of(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs of images, or of features served in their place (:class:`FeatureCache`'s loaders in ``fit``).

        Cached pre-logit features (2-D, ``cache_features=True`` or a classifier-only phase of :meth:`head_on_features`)
        go through dropout and the classifier; cached ``forward_features`` outputs (a head group with layers of its
        own, inside ``fit`` with ``cache_features=True``, or a head-group phase of :meth:`head_on_features`) go
        through the backbone's ``forward_head``.
        """
        served = self.__dict__.get("_features_as_inputs")
        trainer = self._trainer
        if self._caches_trunk and trainer is not None and trainer.state.fn == "fit":
            served = "trunk" if serving_features(trainer, training=self.training) else served  # its loaders, or images
        if served == "trunk":
            forward_head = cast("Callable[[torch.Tensor], torch.Tensor]", self.backbone.forward_head)  # timm API
            return forward_head(x)
        if x.ndim != 2 or not (self.hparams["cache_features"] or served):
            return self(x)
        features = nn.functional.dropout(x, p=self.hparams["drop_rate"], training=self.training)
        get_classifier = cast("Callable[[], nn.Module]", self.backbone.get_classifier)  # timm API, not on `nn.Module`
        return cast("torch.Tensor", get_classifier()(features))

    @contextmanager
    def head_on_features(self) -> Iterator[Callable[[torch.Tensor], torch.Tensor] | None]:
        """While only the head trains (a frozen, deterministic backbone before it; no mixup): inputs may be features.

        Yields a feature extractor and, inside the block, takes the batches it computed as inputs of the training
        step: the pre-logit features (:func:`~lit_transfer.models.frozen_features.frozen_features`) when the
        classifier alone trains, else the output of timm's ``forward_features``
        (:class:`~lit_transfer.models.frozen_features.TrunkFeatures`) when the head group trains alone (a head with
        its own layers, such as MobileNetV3's ``conv_head`` or ConvNeXt's ``head.norm``); yields ``None`` (and
        changes nothing) when more trains now. The LR range test uses it to run a head-only first phase on features
        computed once (:mod:`lit_transfer.tuner.range_test`).
        """
        extract: Callable[[torch.Tensor], torch.Tensor]
        if self.mixup is not None:
            served = None
        elif trains_classifier_only(self.backbone):
            served, extract = "pre_logits", partial(frozen_features, self.backbone)
        elif trains_head_group_only(self.backbone):
            served, extract = "trunk", TrunkFeatures(self.backbone)
        else:
            served = None
        if served is None:
            yield None
            return
        self.__dict__["_features_as_inputs"] = served
        try:
            yield extract
        finally:
            self.__dict__["_features_as_inputs"] = None

    def configure_callbacks(self) -> list[Callback]:
        """The NaN/inf loss guard, the synchronised stop, and (when asked for) freezing, feature cache, head probe."""
        callbacks: list[Callback] = [NonFiniteLossGuard(), SynchronizedStop()]
        if not isinstance(self.policy, FullFineTune) or self.policy.train_bn:
            callbacks.append(LayerFreezing(self.policy))
        if self.hparams["cache_features"]:
            extract = TrunkFeatures(self.backbone) if self._caches_trunk else partial(frozen_features, self.backbone)
            callbacks.append(FeatureCache(extract))
        if self.hparams.get("probe_views", 0):  # absent from the hyper-parameters of earlier releases' checkpoints
            callbacks.append(HeadProbe(self.hparams["probe_views"], partial(frozen_features, self.backbone)))
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
        """The task's loss of one batch (on mixed images and targets when mixup is on and the batch is even)."""
        x, y = batch[0], self.targets_for_loss(batch[1], batch_idx)
        if self.mixup is not None and len(x) % 2 == 0:
            x, mixed = self.mixup(x, y)
            loss = self.loss(self(x), mixed, "train", mixed=True)
        else:
            outputs = self.outputs_of(x)
            loss = self.loss(outputs, y, "train")
            if self.mixup is None:
                self.update_metrics("train", outputs.detach(), y)
        # a mean over ranks: synced (one scalar all-reduce per step under DDP, nothing on one device)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        return loss

    def log_metrics_once(self, *collections: MetricCollection) -> None:
        """Register training metric collections for logging at the epoch's first step only.

        Metric objects are computed from their whole-epoch state at epoch end: registering them once per epoch is
        enough, and saves Lightning's per-call logging cost on every other step.
        """
        if not self._train_metrics_logged:
            for metrics in collections:
                self.log_dict(metrics, on_step=False, on_epoch=True)
            self._train_metrics_logged = True

    def evaluate(self, batch: Any, batch_idx: int, split: Split) -> torch.Tensor:
        """Loss and metrics of a validation or test batch; returns the raw outputs."""
        x, y = batch[0], self.targets_for_loss(batch[1], batch_idx)
        outputs = self.outputs_of(x)
        loss = self.loss(outputs, y, split)
        self.update_metrics(split, outputs, y)
        self.log(f"{split}_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        return outputs

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and metrics on a validation batch."""
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and metrics on a test batch."""
        self.evaluate(batch, batch_idx, "test")

    @staticmethod
    def images_of(batch: Any) -> torch.Tensor:
        """The images of a prediction batch: a tensor, the first item of a tuple, or a dict's ``"image"``."""
        if isinstance(batch, dict):
            return cast("torch.Tensor", batch["image"])
        return cast("torch.Tensor", batch[0] if isinstance(batch, (list, tuple)) else batch)


def _check_probe_views(views: Any, backbone: nn.Module, name: str) -> None:
    """Refuse a ``probe_views`` that is not an integer ``>= 0``, or a positive one for a head that is not linear."""
    if not is_int(views) or views < 0:
        raise ValueError(
            f"`probe_views` must be an integer >= 0 (augmented views of the training set the classifier is fitted to"
            f" before training; 0: none), got {views!r}."
        )
    if views and linear_classifier(backbone) is None:
        raise ValueError(
            f"`probe_views` fits a linear classifier on pre-logit features, but the head of {name!r}"
            f" ({type(backbone).__name__}) is not one linear layer. Set `probe_views: 0`."
        )
