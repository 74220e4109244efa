"""The segmenter's network: a timm encoder, a decoder from segmentation-models-pytorch, and a 1x1 head.

The encoder is the timm model :func:`lit_transfer.backbones.create_backbone` builds (local or hub weights, strict
loading, offline first), its classifier and final norm pruned (``prune_intermediate_layers``) and its feature maps
taken with ``forward_intermediates``: it stays a timm model, so its ``group_matcher`` still gives its layer groups.
The decoders are segmentation-models-pytorch's own (``UnetDecoder``, ``FPNDecoder``, ``SegmentationHead``), fed with
the feature list smp's timm universal encoders give (the input first, then one map per reduction 2, 4, 8, 16, 32; a
0-channel placeholder at reduction 2 for encoders that start at 4, as smp does for ConvNeXt and Swin).

``forward`` returns per-pixel class scores (logits) at the input's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn
from torch.nn import functional as F

from lit_transfer.errors import check_int

__all__ = ["DECODERS", "SegmentationNetwork", "check_decoder_arguments", "encoder_reductions"]

Decoder = Literal["unet", "fpn"]
DECODERS: tuple[str, ...] = ("unet", "fpn")
"""The decoders :class:`SegmentationNetwork` builds by name."""

_CONV_STYLE = [2, 4, 8, 16, 32]
_TRANSFORMER_STYLE = [4, 8, 16, 32]


def check_decoder_arguments(decoder: str, decoder_channels: int) -> None:
    """Refuse an unknown decoder or a width it cannot take (``ValueError`` naming the argument and its value).

    Example:
        >>> check_decoder_arguments("fpn", 48)
        Traceback (most recent call last):
        ...
        ValueError: `decoder_channels` of the FPN decoder must be a multiple of 64 (its segmentation blocks use \
GroupNorm with 32 groups over half that width), got 48.
    """
    if decoder not in DECODERS:
        raise ValueError(f"`decoder` must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}.")
    check_int("decoder_channels", decoder_channels, minimum=16)
    if decoder == "fpn" and decoder_channels % 64:
        raise ValueError(
            "`decoder_channels` of the FPN decoder must be a multiple of 64 (its segmentation blocks use GroupNorm"
            f" with 32 groups over half that width), got {decoder_channels!r}."
        )


def encoder_reductions(encoder: nn.Module) -> list[int]:
    """The reductions (input size over feature-map size) of a timm model's feature maps, from its ``feature_info``."""
    info = getattr(encoder, "feature_info", None)
    if not isinstance(info, Sequence) or not info:
        return []
    return [int(entry["reduction"]) for entry in info]


def _check_encoder(encoder: nn.Module, name: str) -> list[int]:
    """The encoder's reductions, refused unless they are a pyramid the decoders take."""
    reductions = encoder_reductions(encoder)
    if not hasattr(encoder, "forward_intermediates") or not hasattr(encoder, "prune_intermediate_layers"):
        raise ValueError(
            f"The backbone {name!r} ({type(encoder).__name__}) has no `forward_intermediates`, the timm hook the"
            " segmenter takes its feature maps from. Choose a timm CNN or hierarchical transformer (resnet*,"
            " convnext*, efficientnet*, regnet*, swin*, ...)."
        )
    if reductions not in (_CONV_STYLE, _TRANSFORMER_STYLE):
        raise ValueError(
            f"The backbone {name!r} gives feature maps at reductions {reductions}, but the U-Net and FPN decoders"
            f" need a feature pyramid at {_CONV_STYLE} (CNNs) or {_TRANSFORMER_STYLE} (ConvNeXt, Swin): a plain"
            " ViT keeps one resolution throughout. Choose a hierarchical backbone (resnet*, convnext*,"
            " efficientnet*, regnet*, swin*, ...)."
        )
    return reductions


class SegmentationNetwork(nn.Module):
    """A timm encoder, a U-Net or FPN decoder and a 1x1 head: per-pixel class scores at the input size.

    Args:
        encoder: A timm model (built with a classifier, which is pruned here with its final norm).
        num_classes: Classes of the head.
        in_chans: The encoder's input channels.
        decoder: ``"unet"`` or ``"fpn"``.
        decoder_channels: The decoder's width: the U-Net's blocks have ``c, c/2, c/4, c/8, c/16`` channels (smp's
            default for 256), the FPN's pyramid ``c`` and its segmentation blocks ``c/2``.
        dropout: Dropout before the FPN's head (``nn.Dropout2d``); the U-Net has none.
        name: The backbone's name, for messages.

    Attributes:
        encoder: The timm model (its ``group_matcher`` gives its layer groups).
        decoder: smp's ``UnetDecoder`` or ``FPNDecoder``.
        head: smp's ``SegmentationHead``: a 1x1 convolution to ``num_classes`` (upsampling the FPN's 1/4 output).
        max_reduction: The coarsest feature map's reduction (32): the FPN needs inputs that it divides.

    Example:
        >>> import timm
        >>> net = SegmentationNetwork(timm.create_model("test_resnet", num_classes=1), 3, decoder_channels=32)
        >>> net(torch.zeros(2, 3, 40, 56)).shape
        torch.Size([2, 3, 40, 56])
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        in_chans: int = 3,
        decoder: Decoder = "unet",
        decoder_channels: int = 256,
        dropout: float = 0.0,
        name: str = "",
    ) -> None:
        super().__init__()
        check_decoder_arguments(decoder, decoder_channels)
        reductions = _check_encoder(encoder, name or type(encoder).__name__)
        prune = cast("Any", encoder).prune_intermediate_layers
        self.indices: list[int] = [int(i) for i in prune(len(reductions), prune_norm=True, prune_head=True)]
        self.encoder = encoder
        self.placeholder = reductions[0] != 2  # smp's empty map at reduction 2 for encoders that start at 4
        info = cast("Any", encoder).feature_info
        channels = [int(entry["num_chs"]) for entry in info]
        encoder_channels = [in_chans, *([0] if self.placeholder else []), *channels]
        self.max_reduction = reductions[-1]
        if decoder == "unet":
            widths = [max(1, decoder_channels // 2**i) for i in range(5)]
            self.decoder: nn.Module = UnetDecoder(encoder_channels, widths, n_blocks=5)
            self.head = SegmentationHead(widths[-1], num_classes, kernel_size=1)
        else:
            self.decoder = FPNDecoder(
                encoder_channels,
                encoder_depth=5,
                pyramid_channels=decoder_channels,
                segmentation_channels=decoder_channels // 2,
                dropout=dropout,
            )
            out_channels = cast("int", self.decoder.out_channels)
            self.head = SegmentationHead(out_channels, num_classes, kernel_size=1, upsampling=4)

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The encoder's timm pretrained config (its input size, mean and std: the data config the CLI links)."""
        return cast("dict[str, Any]", getattr(self.encoder, "pretrained_cfg", {}))

    def no_weight_decay(self) -> set[str]:
        """The encoder's ``no_weight_decay()`` names (relative to the encoder, as its layer groups name them)."""
        names = getattr(self.encoder, "no_weight_decay", None)
        return set(names()) if callable(names) else set()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature list smp's decoders take: the input, then one map per reduction 2 (or a placeholder) to 32."""
        intermediates = cast("Any", self.encoder).forward_intermediates
        maps = list(intermediates(x, indices=self.indices, intermediates_only=True))
        if self.placeholder:
            height, width = x.shape[-2] // 2, x.shape[-1] // 2
            maps.insert(0, x.new_empty((x.shape[0], 0, height, width)))
        return [x, *maps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class scores ``(N, num_classes, H, W)`` of images ``(N, C, H, W)``."""
        scores = cast("torch.Tensor", self.head(self.decoder(self.features(x))))
        if scores.shape[-2:] != x.shape[-2:]:
            scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores
