"""Backbones built for one input size (ViT, Swin, MaxViT, ...): the data's size, checked before training.

timm's vision transformers embed patches with position embeddings made for one image size and refuse any other at
the first forward pass (``PatchEmbed(strict_img_size=True)``); window and relative-position attention (Swin V2 CR,
MaxViT, CoAtNet) fail there too, with less telling errors. Built with ``img_size``, timm makes them for another
size, and resamples pretrained position embeddings to it when it loads the weights (hub or local file alike).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from timm.layers import PatchEmbed
from torch import nn

__all__ = [
    "check_input_size",
    "dynamic_img_size_refused",
    "fixed_input_size",
    "img_size_refused",
    "sized_timm_model",
]


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


def sized_timm_model(network: nn.Module) -> nn.Module | None:
    """The timm model in ``network`` (itself, or a segmenter's encoder) if its architecture takes ``img_size``.

    Example:
        >>> import timm
        >>> type(sized_timm_model(timm.create_model("test_maxvit"))).__name__
        'MaxxVit'
        >>> sized_timm_model(timm.create_model("test_resnet")) is None  # takes any size: nothing to check
        True
    """
    for module in network.modules():
        if hasattr(module, "forward_features") and hasattr(module, "pretrained_cfg"):
            return module if "img_size" in inspect.signature(type(module).__init__).parameters else None
    return None


def _size_failure(model: Any, in_chans: int, height: int, width: int) -> Exception | None:
    """The error one blank image of this size raises in the model's feature extraction, or ``None``.

    The model is put in eval mode (no BatchNorm statistic moves) for the pass; every module gets its own mode back
    after it (a frozen group's BatchNorm kept in eval mode stays so).
    """
    weight = next(model.parameters(), None)
    blank = torch.zeros(
        1,
        in_chans,
        height,
        width,
        device=weight.device if weight is not None else None,
        dtype=weight.dtype if weight is not None and weight.is_floating_point() else None,
    )
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if hasattr(model, "forward_intermediates"):
                model.forward_intermediates(blank, intermediates_only=True)
            else:
                model.forward_features(blank)
    except (AssertionError, RuntimeError, ValueError, IndexError) as err:
        return err
    finally:
        for module, training in modes:
            module.training = training
    return None


def check_input_size(
    backbone: nn.Module, name: str, datamodule: Any, in_chans: int = 3, img_size: int | None = None
) -> None:
    """Refuse a DataModule whose images (its ``resolved_config.size``) the backbone cannot take, before training.

    A strict patch embedding gives the size it takes outright (:func:`fixed_input_size`). Another architecture
    made for one size (:func:`sized_timm_model`: Swin V2 CR, MaxViT, CoAtNet, ...) extracts the features of one
    blank image of the data's size, in eval mode without gradients; backbones that take any size (CNNs) are not
    run.

    Args:
        backbone: The model's network (a timm model, or a segmenter's network holding one).
        name: The backbone's name, for the message.
        datamodule: The run's DataModule (any without a ``resolved_config`` is not checked).
        in_chans: The backbone's input channels.
        img_size: The size the backbone was built for (``None``: its architecture's default).

    Raises:
        ValueError: Naming both sizes and the two fixes (``img_size`` on the model, ``image_size`` on the data).
    """
    size = getattr(getattr(datamodule, "resolved_config", None), "size", None)
    if not size:
        return
    height, width = (int(side) for side in size)
    fixed = fixed_input_size(backbone)
    if fixed is not None:
        if tuple(size) != fixed:
            _refuse(name, datamodule, height, width, f"takes only {fixed[0]}x{fixed[1]} px images", fixed[0])
        return
    model = sized_timm_model(backbone)
    failure = None if model is None else _size_failure(model, in_chans, height, width)
    if model is None or failure is None:
        return
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    built = int(img_size or tuple(cfg.get("input_size", (0,)))[-1])
    takes = f"is built for {built}x{built} px images" if built else "cannot take them"
    cause = f"{type(failure).__name__}: {(str(failure).strip().splitlines() or [''])[0][:200]}"
    _refuse(name, datamodule, height, width, takes, built, cause)


def _refuse(name: str, datamodule: Any, height: int, width: int, takes: str, side: int, cause: str = "") -> None:
    """Raise the size error: what the backbone takes, the data's size, timm's own error if any, and the fixes."""
    fixes = []
    if height == width:
        fixes.append(
            f"build the backbone for the data's size with `img_size: {height}` (`--model.img_size {height}`; timm"
            " resamples pretrained position embeddings to it)"
        )
    if side:
        fixes.append(f"set the DataModule's `image_size` to {side} (`--data.image_size {side}`)")
    raise ValueError(
        f"The backbone {name!r} {takes}, but the DataModule ({type(datamodule).__name__}) gives {height}x{width}"
        f" px{f' (timm: {cause})' if cause else ''}. To fit them, {' or '.join(fixes) or 'resize the images'}."
    )


def img_size_refused(name: str, img_size: int, error: TypeError) -> ValueError | None:
    """The clear error for ``img_size`` given to a timm architecture that has no such argument.

    Returns:
        The error to raise, or ``None`` for another ``TypeError`` (to re-raise as it is).
    """
    return _refused(
        "img_size",
        error,
        f"`img_size` ({img_size}) builds a backbone made for one input size (ViT, DeiT, Swin, ...) for another, but"
        f" timm's {name!r} has no such argument: it takes any input size. Leave `img_size` unset.",
    )


def dynamic_img_size_refused(name: str, error: TypeError) -> ValueError | None:
    """The clear error for ``dynamic_img_size`` given to a timm architecture that has no such argument.

    Returns:
        The error to raise, or ``None`` for another ``TypeError`` (to re-raise as it is).
    """
    return _refused(
        "dynamic_img_size",
        error,
        f"`dynamic_img_size: true` lets a backbone made for one input size (ViT, DeiT, EVA, Swin, ...) take any, but"
        f" timm's {name!r} has no such argument: it takes any input size already, or (MaxViT, CoAtNet, ...) only the"
        " size it is built for, which `img_size` sets. Leave `dynamic_img_size` false.",
    )


def _refused(argument: str, error: TypeError, message: str) -> ValueError | None:
    """``ValueError(message)`` if timm's ``error`` is about ``argument`` (an unexpected keyword), else ``None``."""
    return ValueError(message) if f"'{argument}'" in str(error) else None
