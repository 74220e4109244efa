"""Backbones built for one input size (ViT, DeiT, Swin, ...): the size the data must have, checked before training.

timm's vision transformers embed patches with position embeddings made for one image size and refuse any other at
the first forward pass (``PatchEmbed(strict_img_size=True)``). Built with ``img_size``, timm makes them for another
size, and resamples pretrained position embeddings to it when it loads the weights (hub or local file alike).
"""

from __future__ import annotations

from typing import Any

from timm.layers import PatchEmbed
from torch import nn

__all__ = ["check_input_size", "fixed_input_size", "img_size_refused"]


def fixed_input_size(backbone: nn.Module) -> tuple[int, int] | None:
    """The ``(height, width)`` the backbone takes only, or ``None`` when it takes any input size.

    Example:
        >>> import timm
        >>> fixed_input_size(timm.create_model("test_vit3", img_size=32))
        (32, 32)
        >>> fixed_input_size(timm.create_model("test_resnet")) is None
        True
    """
    for module in backbone.modules():
        strict = isinstance(module, PatchEmbed) and module.strict_img_size and module.img_size is not None
        if strict and not getattr(module, "dynamic_img_size", False):
            height, width = tuple(module.img_size)  # type: ignore[arg-type]
            return int(height), int(width)
    return None


def check_input_size(backbone: nn.Module, name: str, datamodule: Any) -> None:
    """Refuse a DataModule whose images (its ``resolved_config.size``) a fixed-size backbone cannot take.

    Raises:
        ValueError: Naming both sizes and the two fixes (``img_size`` on the model, ``image_size`` on the data).
    """
    size = getattr(getattr(datamodule, "resolved_config", None), "size", None)
    fixed = fixed_input_size(backbone)
    if fixed is None or not size or tuple(size) == fixed:
        return
    height, width = (int(side) for side in size)
    rebuild = (
        f"build the backbone for the data's size with `img_size: {height}` (`--model.img_size {height}`; timm"
        " resamples pretrained position embeddings to it), or "
        if height == width
        else ""
    )
    raise ValueError(
        f"The backbone {name!r} takes only {fixed[0]}x{fixed[1]} px images, but the DataModule"
        f" ({type(datamodule).__name__}) gives {height}x{width} px. To fit them, {rebuild}set the DataModule's"
        f" `image_size` to {fixed[0]} (`--data.image_size {fixed[0]}`)."
    )


def img_size_refused(name: str, img_size: int, error: TypeError) -> ValueError | None:
    """The clear error for ``img_size`` given to a timm architecture that has no such argument.

    Returns:
        The error to raise, or ``None`` for another ``TypeError`` (to re-raise as it is).
    """
    if "img_size" not in str(error):
        return None
    return ValueError(
        f"`img_size` ({img_size}) builds a backbone made for one input size (ViT, DeiT, Swin, ...) for another, but"
        f" timm's {name!r} has no such argument: it takes any input size. Leave `img_size` unset."
    )
