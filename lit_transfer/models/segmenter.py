"""TransferSegmenter: semantic segmentation (a class per pixel) on a :class:`TransferModule`."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_transfer.backbones import create_backbone
from lit_transfer.freezing import FreezingPolicy
from lit_transfer.freezing.layer_groups import LayerGroup, layer_groups
from lit_transfer.models.arguments import check_arguments
from lit_transfer.models.base import Split, TransferModule
from lit_transfer.models.data_checks import check_classes
from lit_transfer.models.optimization import LRSchedulerCallable, OptimizerCallable
from lit_transfer.models.segmentation_freezing import with_decoder
from lit_transfer.models.segmentation_losses import SegmentationLoss, check_loss_arguments
from lit_transfer.models.segmentation_metrics import PixelConfusion, segmentation_scores
from lit_transfer.models.segmentation_network import Decoder, SegmentationNetwork, check_decoder_arguments
from lit_transfer.tasks import check_data_task

__all__ = ["TransferSegmenter"]


class TransferSegmenter(TransferModule):
    """Semantic segmentation fine-tuned from a timm backbone: a class for every pixel.

    The network (:class:`~lit_transfer.models.segmentation_network.SegmentationNetwork`) is the timm backbone as
    encoder (built like the classifier's: hub or local weights, strict loading, offline first; classifier pruned),
    a decoder by name (``"unet"`` or ``"fpn"``, segmentation-models-pytorch's) and a 1x1 head to ``num_classes``.
    ``forward`` returns per-pixel class scores ``(N, num_classes, H, W)`` at the input size.

    Layer groups: the encoder's timm groups (``stem``, ``layer1`` ...), then ``decoder``, then ``head``; every
    freezing policy, ``layer_decay``, ``train_bn`` and ``auto`` act on them, counted from the head as for the
    classifier. The decoder is as new as the head, so the policies that start with "the head alone" train both
    (:mod:`lit_transfer.models.segmentation_freezing`): ``linear_probe`` keeps the encoder frozen for the whole run,
    ``freeze_unfreeze`` (the default) trains the decoder and head first, then everything (LP-FT); the restated policy
    (an ``UnfreezeAtEpochs`` schedule) is the one recorded in ``hparams`` and checkpoints.

    Targets are class indices ``(N, H, W)`` (int64), ``ignore_index`` where no class applies; the DataModules of
    :mod:`lit_transfer.data.segmentation` give them. Metrics (see :mod:`lit_transfer.models.segmentation_metrics`):
    ``<split>_miou`` (mean IoU over the classes present or predicted), ``<split>_dice``, ``<split>_pixel_acc`` and
    ``<split>_iou_<class>`` (validation and test), logged at each epoch's end; ``best.ckpt`` is chosen by
    ``val_miou``.

    Args:
        backbone: timm model name of the encoder; it must give a feature pyramid (CNNs, ConvNeXt, Swin; not a plain
            ViT).
        num_classes: Number of classes, the background included (linked from the DataModule by the CLI).
        pretrained: ``True`` for hub weights, ``False`` for random init, or a local ``.safetensors``/``.pth``/
            ``.ckpt`` file (a classifier's checkpoint included: its backbone becomes the encoder).
        in_chans: Input channels.
        img_size: The input size (px) to build an encoder made for one input size for (Swin, MaxViT, ...: timm's
            ``img_size``; pretrained position tables are resampled to it); ``None``: the architecture's own. Such an
            encoder refuses data of another size before training, naming both sizes.
        class_names: Names of the classes, stored in checkpoints (the DataModule's ``class_names``).
        decoder: ``"unet"`` (U-Net, skip connections at every reduction) or ``"fpn"`` (feature pyramid network;
            the input's height and width must be multiples of 32).
        decoder_channels: Width of the decoder: the U-Net's blocks have ``c, c/2 ... c/16`` channels, the FPN's
            pyramid ``c`` and its segmentation blocks ``c/2`` (a multiple of 64). 256 is smp's default.
        loss: ``"ce"`` (cross-entropy), ``"dice"``, ``"focal"`` or a sum such as ``"ce+dice"``
            (:mod:`lit_transfer.models.segmentation_losses`).
        ignore_index: Mask value of pixels that count in no loss or metric (255, as the DataModules' default).
        class_weights: A loss weight per class, or ``None``.
        freeze: Freezing policy (object, config dict or name); the head-only ones count the decoder with the head.
        train_bn: Keep BatchNorm in frozen groups training.
        layer_decay: Layer-wise LR decay in ``(0, 1]`` over the groups counted from the head.
        frozen_lr_mult: LR factor for the groups frozen in the first epoch.
        drop_rate: Dropout before the FPN's head (``Dropout2d``); the U-Net has none.
        drop_path_rate: Stochastic depth of the encoder.
        optimizer: Callable building the optimizer from parameter groups (default AdamW, as for the classifier).
        lr_scheduler: Callable building the scheduler (default warmup then cosine, stepped every step).
        scheduler_interval: When a given ``lr_scheduler`` steps.
        warmup_epochs: Warmup of the default schedule.
        cache_features: Not for segmentation (the decoder reads every level of the encoder): ``True`` is refused.
        compile: Compile the network's forward with ``torch.compile``.
        channels_last: Use the channels-last memory format.

    Example:
        >>> model = TransferSegmenter("test_resnet", num_classes=3, pretrained=False, decoder_channels=32)
        >>> model(torch.randn(2, 3, 32, 48)).shape
        torch.Size([2, 3, 32, 48])
        >>> [g.name for g in model.layer_groups]
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'decoder', 'head']
    """

    default_task: ClassVar[str] = "segmentation"

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        pretrained: bool | str = True,
        in_chans: int = 3,
        img_size: int | None = None,
        class_names: list[str] | None = None,
        decoder: Decoder = "unet",
        decoder_channels: int = 256,
        loss: str = "ce",
        ignore_index: int = 255,
        class_weights: list[float] | None = None,
        freeze: FreezingPolicy | str | dict[str, Any] = "freeze_unfreeze",
        train_bn: bool | None = None,
        layer_decay: float | None = None,
        frozen_lr_mult: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup_epochs: float = 1.0,
        cache_features: bool = False,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        check_arguments(num_classes, class_names, layer_decay, 0.0, 0.0, 0.0, warmup_epochs)
        check_decoder_arguments(decoder, decoder_channels)
        check_loss_arguments(loss, num_classes, ignore_index, class_weights)
        if cache_features:
            raise ValueError(
                "`cache_features=True` caches one feature vector per image for a classifier's linear probe; a"
                " segmenter's decoder reads every level of the encoder at every pixel, so there is nothing to cache."
                " Set `cache_features: false` (a frozen encoder still skips its backward pass)."
            )
        super().__init__(optimizer, lr_scheduler)
        asked = repr(self.policy)
        restated = with_decoder(self.policy, len(self.layer_groups))
        if repr(restated) != asked:
            rank_zero_info(f"TransferSegmenter: `freeze` {asked} trains the decoder with the head: {restated!r}.")
            self.policy = restated
            self.hparams["freeze"] = restated.to_config()

    # ------------------------------------------------------------- network
    def build_network(self, timm_kwargs: dict[str, Any]) -> nn.Module:
        """The timm encoder (built by :func:`~lit_transfer.backbones.create_backbone`), the decoder and the head."""
        hp = self.hparams
        encoder = create_backbone(hp["backbone"], self.head_size(), hp["pretrained"], hp["in_chans"], **timm_kwargs)
        return SegmentationNetwork(
            encoder,
            self.head_size(),
            in_chans=hp["in_chans"],
            decoder=hp["decoder"],
            decoder_channels=hp["decoder_channels"],
            dropout=hp["drop_rate"],
            name=hp["backbone"],
        )

    def group_network(self) -> list[LayerGroup]:
        """The encoder's timm layer groups, then ``decoder`` and ``head``."""
        network = self.backbone
        assert isinstance(network, SegmentationNetwork)
        decoder = [(f"decoder.{n}", p) for n, p in network.decoder.named_parameters()]
        head = [(f"head.{n}", p) for n, p in network.head.named_parameters()]
        groups = layer_groups(network.encoder, extra=[*decoder, *head])[:-1]  # the encoder's, checked to partition
        return [*groups, _group("decoder", decoder), _group("head", head)]

    # ------------------------------------------------------------- task hooks
    def head_size(self) -> int:
        """``num_classes`` scores per pixel."""
        return int(self.hparams["num_classes"])

    def describe_head(self) -> str:
        """``"3 classes (segmentation)"``."""
        return f"{self.hparams['num_classes']} classes (segmentation)"

    def configure_task(self) -> None:
        """The loss and one pixel confusion matrix per split."""
        hp = self.hparams
        self.loss_fn = SegmentationLoss(hp["loss"], hp["ignore_index"], hp["class_weights"])
        self.train_confusion = PixelConfusion(hp["num_classes"], hp["ignore_index"])
        self.val_confusion = PixelConfusion(hp["num_classes"], hp["ignore_index"])
        self.test_confusion = PixelConfusion(hp["num_classes"], hp["ignore_index"])

    def check_data(self, datamodule: Any, stage: str) -> None:
        """The DataModule's ``task``, ``num_classes``, ``class_names``, ``ignore_index``; the FPN's input size.

        Raises:
            ValueError: Other data than masks, another class count or other names (a warning at ``predict``),
                another ``ignore_index``, or an input size the FPN cannot take.
        """
        check_data_task(self.task, datamodule, getattr(datamodule, "num_classes", None))
        check_classes(self.hparams["num_classes"], self.hparams.get("class_names"), datamodule, stage)
        theirs = getattr(datamodule, "ignore_index", None)
        ours = self.hparams["ignore_index"]
        if isinstance(theirs, int) and theirs != ours:
            raise ValueError(
                f"The DataModule ({type(datamodule).__name__}) marks ignored pixels with {theirs} but the model"
                f" ignores {ours}: the ignored pixels would count as a class. Set the same `ignore_index` on both."
            )
        size = getattr(getattr(datamodule, "resolved_config", None), "size", None)
        reduction = int(getattr(self.backbone, "max_reduction", 1))
        if self.hparams["decoder"] == "fpn" and size and any(side % reduction for side in size):
            raise ValueError(
                f"The FPN decoder needs inputs whose height and width are multiples of {reduction}, but the"
                f" DataModule gives {size[0]}x{size[1]} px. Set the DataModule's `image_size` to a multiple of"
                f" {reduction} (e.g. {_round_up(max(size), reduction)}), or use `decoder: unet`."
            )

    def targets_for_loss(self, targets: Any, batch_idx: int) -> torch.Tensor:
        """Masks of class indices ``(N, H, W)`` as int64, checked; their values at each epoch's first batch."""
        if not isinstance(targets, torch.Tensor) or targets.ndim != 3 or targets.is_floating_point():
            found = (
                f"{str(targets.dtype).removeprefix('torch.')} of shape {tuple(targets.shape)}"
                if isinstance(targets, torch.Tensor)
                else type(targets).__name__
            )
            raise ValueError(
                "TransferSegmenter takes masks of class indices of shape (N, H, W) (integers,"
                f" {self.hparams['ignore_index']} for ignored pixels), got {found}. Use SegmentationFolderDataModule"
                " or SegmentationCSVDataModule, or TransferClassifier/TransferRegressor for one target per image."
            )
        targets = targets.long()
        if batch_idx == 0 and targets.numel():
            ignore, count = self.hparams["ignore_index"], self.hparams["num_classes"]
            wrong = (targets != ignore) & ((targets < 0) | (targets >= count))
            if bool(wrong.any()):
                values = sorted({int(v) for v in targets[wrong].unique().tolist()})[:10]
                raise ValueError(
                    f"Mask values {values} are neither class indices 0..{count - 1} nor `ignore_index` {ignore}."
                    " Build the model with the DataModule's `num_classes`, or fix the masks."
                )
        return targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, split: Split, mixed: bool = False) -> torch.Tensor:
        """The chosen loss (cross-entropy, Dice, focal or a sum) over the pixels not ignored, in float32."""
        return self.loss_fn(outputs, targets)  # type: ignore[no-any-return]

    def update_metrics(self, split: Split, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Count the batch's pixels in the split's confusion matrix (its scores are logged at the epoch's end)."""
        {"train": self.train_confusion, "val": self.val_confusion, "test": self.test_confusion}[split].update(
            outputs.detach(), targets
        )

    def _log_scores(self, split: Split, confusion: PixelConfusion, per_class: bool) -> None:
        counts = confusion.compute()  # summed over DDP processes: the same on every rank
        confusion.reset()
        scores = segmentation_scores(counts, self.class_names)
        if not per_class:
            scores = {k: v for k, v in scores.items() if not k.startswith("iou_")}
        values = {f"{split}_{k}": v for k, v in scores.items()}
        self.log(f"{split}_miou", values.pop(f"{split}_miou"), prog_bar=split == "val", sync_dist=True)
        self.log_dict(values, sync_dist=True)  # the same on every rank already: the mean changes nothing

    def on_train_epoch_end(self) -> None:
        """Log ``train_miou``, ``train_dice`` and ``train_pixel_acc`` of the epoch."""
        if self.train_confusion.update_called:
            self._log_scores("train", self.train_confusion, per_class=False)

    def on_validation_epoch_end(self) -> None:
        """Log ``val_miou``, ``val_dice``, ``val_pixel_acc`` and ``val_iou_<class>``."""
        if self.val_confusion.update_called:
            self._log_scores("val", self.val_confusion, per_class=True)

    def on_test_epoch_end(self) -> None:
        """Log ``test_miou``, ``test_dice``, ``test_pixel_acc`` and ``test_iou_<class>``."""
        if self.test_confusion.update_called:
            self._log_scores("test", self.test_confusion, per_class=True)

    # ----------------------------------------------------------------- model
    @property
    def class_names(self) -> list[str]:
        """Class names (``"0"``, ``"1"``, ... when none were given)."""
        names = self.hparams.get("class_names")
        return [str(n) for n in names] if names else [str(i) for i in range(self.hparams["num_classes"])]

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Per-pixel predictions at the input size.

        Returns:
            ``preds``: class indices ``(N, H, W)``; ``probs``: softmax over classes ``(N, C, H, W)``.
            :class:`~lit_transfer.callbacks.SegmentationMaskWriter` maps them back to each image's own size.
        """
        probs = self(self.images_of(batch)).float().softmax(dim=1)
        return {"preds": probs.argmax(dim=1), "probs": probs}


def _group(name: str, named: list[tuple[str, nn.Parameter]]) -> LayerGroup:
    return LayerGroup(name, tuple(n for n, _ in named), tuple(p for _, p in named))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
