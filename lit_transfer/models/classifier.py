"""TransferClassifier: multiclass, multi-label or binary image classification on a :class:`TransferModule`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MetricCollection

from lit_transfer.freezing import FreezingPolicy
from lit_transfer.models.arguments import check_arguments, check_task_arguments
from lit_transfer.models.base import Split, TransferModule
from lit_transfer.models.data_checks import check_classes
from lit_transfer.models.metrics import ThresholdedMetrics, classification_metrics
from lit_transfer.models.mixing import DenseMixup
from lit_transfer.models.optimization import LRSchedulerCallable, OptimizerCallable
from lit_transfer.models.sigmoid_decisions import SigmoidDecisions, tunes_now
from lit_transfer.models.targets import dense_targets
from lit_transfer.tasks import check_data_task

__all__ = ["TransferClassifier"]


class TransferClassifier(TransferModule):
    """Image classifier fine-tuned from a timm backbone: multiclass (default), multi-label or binary.

    ``multiclass``: softmax cross-entropy on class indices, metrics ``acc``, ``f1``, ``acc_top5``. ``multilabel``:
    a sigmoid per label on multi-hot targets, metrics ``map``, ``f1`` and ``ap_<label>``. ``binary``: one logit (the
    probability of ``class_names[1]``), metrics ``acc``, ``f1``, ``auroc``. The sigmoid tasks decide at
    :attr:`thresholds`, re-tuned for F1 after every validation (:mod:`lit_transfer.models.sigmoid_decisions`). The
    arguments every task class shares are those of :class:`~lit_transfer.models.base.TransferModule`; the user's
    guide is ``docs/getting-started.md`` and ``docs/multilabel.md``.

    Args:
        backbone: timm model name (``"resnet50.a1_in1k"``, ``"hf-hub:org/repo"``).
        num_classes: Number of classes (linked from the DataModule by the CLI).
        pretrained: ``True`` for hub weights, ``False`` for random init, or a local weights file.
        in_chans: Input channels (pretrained stems are adapted).
        img_size: The input size (px) to build a backbone made for one input size for (ViT, DeiT, Swin, ...:
            timm's ``img_size``; pretrained position embeddings are resampled to it); ``None``: the architecture's
            own. Such a backbone refuses data of another size before training, naming both sizes.
        dynamic_img_size: Build a backbone made for one input size (ViT, DeiT, EVA, Swin, ...) to take any size
            divisible by its patch size (timm's ``dynamic_img_size``: position embeddings resampled at each forward
            pass): train at one size and predict at another, or change the data's size without rebuilding it.
            Refused, with the reason, by architectures without it.
        class_names: Names of the classes, stored in checkpoints for prediction.
        freeze: Freezing policy: an object, a config dict or a name (``"freeze_unfreeze"``, ``"linear_probe"``,
            ``"gradual_unfreeze"``, ``"unfreeze_at_epochs"``, ``"full_fine_tune"``, ``"surgical"``, ``"auto"``).
        train_bn: Keep BatchNorm in frozen groups training (overrides the policy's setting).
        layer_decay: Layer-wise LR decay in ``(0, 1]``: group ``i`` from the head trains at ``lr * layer_decay**i``.
        frozen_lr_mult: LR factor for the groups frozen in the first epoch (applied once they unfreeze).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth of the backbone (timm models that support it).
        label_smoothing: Label smoothing of the training loss (sigmoid targets move towards 0.5).
        mixup_alpha: timm ``Mixup`` alpha (0 disables mixup); sigmoid targets are mixed with the images.
        cutmix_alpha: timm ``Mixup`` CutMix alpha (0 disables CutMix).
        optimizer: Callable building the optimizer from parameter groups; default AdamW (see the base class).
        lr_scheduler: Callable building the scheduler; default warmup then cosine, stepped every step.
        scheduler_interval: When a given ``lr_scheduler`` steps: every ``"epoch"`` or every ``"step"``.
        warmup_epochs: Warmup of the default schedule.
        cache_features: Train a linear probe on features the frozen backbone computed once (no augmentation;
            :mod:`lit_transfer.models.frozen_features`).
        probe_views: Before a new fit trains, fit the classifier to the frozen backbone's features of this many
            augmented views of the training set (L-BFGS on the training loss, the linear-probe stage of LP-FT:
            :class:`~lit_transfer.callbacks.HeadProbe`); 0 starts from the fresh head.
        compile: Compile the backbone's forward with ``torch.compile`` (checkpoint keys stay unprefixed).
        channels_last: Use the channels-last memory format.
        task: ``"multiclass"``, ``"multilabel"`` or ``"binary"``.
        threshold: Starting decision threshold of the sigmoid tasks (kept by labels without validation positives).
        tune_threshold: ``"per_label"``, ``"global"`` (one threshold, best macro F1) or ``"none"``.
        pos_weight: Weight of the positives in the sigmoid loss: a list (one per label), or ``"auto"`` for
            ``(1 - f) / f`` with ``f`` each label's frequency among the training rows.

    Attributes:
        data_config: The preprocessing the model expects (timm-style, plain values), recorded at ``fit`` and kept
            in checkpoints (:mod:`lit_transfer.models.trained_preprocessing`).
        layer_groups: The backbone's layer groups, stem first: what the optimizer, freezing and the cache act on.
        thresholds: The decision thresholds of the sigmoid tasks (empty for multiclass).

    Example:
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="linear_probe")
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    sigmoid: SigmoidDecisions

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        pretrained: bool | str = True,
        in_chans: int = 3,
        img_size: int | None = None,
        dynamic_img_size: bool = False,
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
        probe_views: int = 0,
        compile: bool = False,
        channels_last: bool = False,
        task: Literal["multiclass", "multilabel", "binary"] = "multiclass",
        threshold: float = 0.5,
        tune_threshold: Literal["none", "global", "per_label"] = "per_label",
        pos_weight: Literal["auto"] | list[float] | None = None,
    ) -> None:
        check_arguments(
            num_classes, class_names, layer_decay, label_smoothing, mixup_alpha, cutmix_alpha, warmup_epochs
        )
        check_task_arguments(task, num_classes, threshold, tune_threshold, pos_weight)
        super().__init__(optimizer, lr_scheduler)

    # ------------------------------------------------------------- task hooks
    @property
    def logs_label_ap(self) -> bool:
        """Whether each label's average precision is logged (``val_ap_<label>``, ``test_ap_<label>``): multi-label."""
        return self.task == "multilabel"

    @property
    def sigmoid_outputs(self) -> int:
        """Number of sigmoid outputs: labels (multilabel), 1 (binary), 0 (multiclass)."""
        return {"multilabel": int(self.hparams["num_classes"]), "binary": 1}.get(self.task, 0)

    def head_size(self) -> int:
        """``num_classes`` logits; one for binary."""
        return 1 if self.task == "binary" else int(self.hparams["num_classes"])

    def describe_head(self) -> str:
        """``"3 classes"`` (``"3 labels"`` for multilabel)."""
        unit = "labels" if self.task == "multilabel" else "classes"
        return f"{self.hparams['num_classes']} {unit}" + (" (binary)" if self.task == "binary" else "")

    def configure_task(self) -> None:
        """The loss, the mixup, the metrics; for the sigmoid tasks the thresholds, ``pos_weight`` and tuner."""
        hp = self.hparams
        mixing = hp["mixup_alpha"] > 0 or hp["cutmix_alpha"] > 0
        if self.task == "multiclass":
            if mixing:
                from timm.data import Mixup
                from timm.loss import SoftTargetCrossEntropy

                self.mixup = Mixup(
                    mixup_alpha=hp["mixup_alpha"],
                    cutmix_alpha=hp["cutmix_alpha"],
                    label_smoothing=hp["label_smoothing"],
                    num_classes=hp["num_classes"],
                )
                self.soft_loss: nn.Module = SoftTargetCrossEntropy()
            self.train_metrics: nn.Module = classification_metrics(hp["num_classes"], "train_")
            self.val_metrics: nn.Module = classification_metrics(hp["num_classes"], "val_")
            self.test_metrics: nn.Module = classification_metrics(hp["num_classes"], "test_")
            return
        width = self.sigmoid_outputs
        if mixing:
            self.mixup = DenseMixup(hp["mixup_alpha"], hp["cutmix_alpha"], hp["label_smoothing"])
        self.sigmoid = SigmoidDecisions(
            width, float(hp["threshold"]), hp.get("tune_threshold", "none"), hp.get("pos_weight")
        )
        names = self.class_names if self.task == "multilabel" else [self.class_names[1]]
        self.train_metrics = ThresholdedMetrics(self.task, names, "train_", ranking=False)
        self.val_metrics = ThresholdedMetrics(self.task, names, "val_")
        self.test_metrics = ThresholdedMetrics(self.task, names, "test_")

    def check_data(self, datamodule: Any, stage: str) -> None:
        """The DataModule's ``task`` (binary takes multiclass data), ``num_classes`` and ``class_names``.

        A DataModule's ``num_classes`` must equal the model's (else ``ValueError``), and its ``class_names``, when
        both have names, must be the model's in the same order (``ValueError``; a warning at ``predict``, whose
        outputs are named with the model's classes).
        """
        check_data_task(self.task, datamodule, getattr(datamodule, "num_classes", None))
        check_classes(self.hparams["num_classes"], self.hparams.get("class_names"), datamodule, stage)

    def targets_for_loss(self, targets: Any, batch_idx: int) -> torch.Tensor:
        """Class indices as given (multiclass); float ``(N, L)``/``(N, 1)`` targets, checked, for the sigmoid tasks."""
        if self.task == "multiclass":
            return targets  # type: ignore[no-any-return]
        return dense_targets(targets, self.task, self.sigmoid_outputs, check_values=batch_idx == 0)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, split: Split, mixed: bool = False) -> torch.Tensor:
        """Cross-entropy (soft-target after mixup), or BCE with logits for the sigmoid tasks.

        Training applies ``label_smoothing`` (already in mixed targets) and ``pos_weight``; evaluation neither.
        """
        smoothing = self.hparams["label_smoothing"] if split == "train" else 0.0
        if self.task == "multiclass":
            if mixed:
                return self.soft_loss(outputs, targets)  # type: ignore[no-any-return]
            return nn.functional.cross_entropy(outputs, targets, label_smoothing=smoothing)
        if smoothing and not mixed:
            targets = targets * (1.0 - smoothing) + 0.5 * smoothing
        return self.sigmoid.loss(outputs, targets, train=split == "train")

    def update_metrics(self, split: Split, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Update ``<split>_metrics`` (logits for multiclass; probabilities and decisions otherwise); log them."""
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[split]
        if isinstance(metrics, MetricCollection):
            metrics.update(outputs, targets)
            collections = [metrics]
        else:
            assert isinstance(metrics, ThresholdedMetrics)
            probs = outputs.float().sigmoid()
            metrics.update(probs, self.sigmoid.decide(probs), targets)
            collections = metrics.collections()
            if split == "val" and tunes_now(self):
                self.sigmoid.observe(probs, targets)
        if split == "train":
            self.log_metrics_once(*collections)
            return
        for collection in collections:  # torchmetrics objects sync themselves
            decisions = collection is not getattr(metrics, "scores", None)
            self.log_dict(collection, on_epoch=True, prog_bar=split == "val" and decisions)

    # --------------------------------------------------------------- thresholds
    @property
    def thresholds(self) -> list[float]:
        """The decision thresholds (one per label; one for binary; ``[]`` for multiclass)."""
        if self.task == "multiclass":
            return []
        return [round(float(t), 6) for t in self.sigmoid.thresholds.tolist()]

    @property
    def pos_weight(self) -> torch.Tensor | None:
        """The positives' weight in the sigmoid training loss (one per output); ``None`` if none, or multiclass."""
        return None if self.task == "multiclass" else self.sigmoid.pos_weight

    def on_validation_epoch_start(self) -> None:
        """Start a fresh collection of the validation predictions that tune the thresholds."""
        if self.task != "multiclass":
            self.sigmoid.start_validation()

    def on_validation_epoch_end(self) -> None:
        """Log each label's AP; during ``fit``, set the thresholds that maximise F1 on this validation.

        The thresholds are the same on every DDP rank (the tuner's counts are summed across ranks).
        """
        if self.task == "multiclass":
            return
        self._log_per_label(self.val_metrics)
        if tunes_now(self):
            self.sigmoid.finish_validation()

    def on_test_epoch_end(self) -> None:
        """Log each label's average precision on the test split."""
        if self.task != "multiclass":
            self._log_per_label(self.test_metrics)

    def _log_per_label(self, metrics: nn.Module) -> None:
        assert isinstance(metrics, ThresholdedMetrics)
        values = metrics.per_label_values()
        if values and not (self._trainer is not None and self._trainer.sanity_checking):
            self.log_dict(values, sync_dist=True)  # the same on every rank already: the mean changes nothing

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the decision thresholds (sigmoid tasks), beside the weights they were tuned with."""
        super().on_save_checkpoint(checkpoint)
        if self.task != "multiclass":
            self.sigmoid.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also restore the decision thresholds (sigmoid tasks), from this or an older checkpoint layout."""
        super().on_load_checkpoint(checkpoint)
        if self.task != "multiclass":
            self.sigmoid.restore(checkpoint)

    def on_train_start(self) -> None:
        """With ``pos_weight="auto"``, set it from the training labels' frequencies (see the class's Args)."""
        if self.task != "multiclass":
            self.sigmoid.weigh_positives(self, self.task)

    # ----------------------------------------------------------------- model
    @property
    def class_names(self) -> list[str]:
        """Class (or label) names (``"0"``, ``"1"``, ... when none were given)."""
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams["num_classes"])]

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Predictions of a batch of images.

        Returns:
            multiclass: ``preds`` (class indices ``(N,)``) and ``probs`` (softmax ``(N, C)``); multilabel:
            ``probs`` (sigmoid ``(N, L)``) and ``preds`` (0/1 ``(N, L)`` at :attr:`thresholds`); binary: ``probs``
            (``(N,)``, of ``class_names[1]``) and ``preds`` (0/1 ``(N,)``).
        """
        logits = self(self.images_of(batch))
        if self.task == "multiclass":
            probs = logits.softmax(dim=-1)
            return {"preds": probs.argmax(dim=-1), "probs": probs}
        probs = logits.float().sigmoid()
        preds = self.sigmoid.decide(probs).long()
        if self.task == "binary":
            return {"preds": preds[:, 0], "probs": probs[:, 0]}
        return {"preds": preds, "probs": probs}
