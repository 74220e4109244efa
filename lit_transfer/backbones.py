"""Create timm backbones with pretrained weights from the hub or a local file, offline first.

Weights are resolved before timm touches the network: a local file (``.safetensors``, ``.pth``/``.pt``/``.bin``
or a Lightning ``.ckpt``) is read with safetensors or ``torch.load(weights_only=True)`` (never a full unpickle);
hub weights come from the Hugging Face cache when present, and when they are not and the hub is unreachable the
error comes in seconds and names the fix. Every load is checked: a tensor of the backbone missing from the file,
or of another shape, is an error listing the keys (timm alone loads non-strictly when the head changes).
"""

from __future__ import annotations

import difflib
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import timm
import torch
from lightning.pytorch.utilities import rank_zero_info
from timm.models import adapt_input_conv
from torch import nn

from lit_transfer.errors import UnsafeFileError, WeightsMismatchError, WeightsUnavailableError

__all__ = ["backbone_data_config", "create_backbone", "load_weights_file", "resolve_hub_weights"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_CKPT_PREFIXES = ("backbone.", "model.backbone.", "model.", "module.", "")


def _check_model_name(name: str) -> str:
    architecture, _ = timm.models.split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown timm backbone {name!r}.{hint} `timm.list_models('*pattern*')` lists the names.")
    return architecture


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool | str | Path = False,
    in_chans: int = 3,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a timm model with a fresh ``num_classes`` head and (optionally) pretrained weights.

    Args:
        name: timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``).
        num_classes: Classes of the new head.
        pretrained: ``True`` for the tag's hub weights, ``False`` for random init, or the path of a local
            weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``, Lightning ``.ckpt``).
        in_chans: Input channels; pretrained RGB stems are adapted (timm's ``adapt_input_conv``).
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).

    Returns:
        The model, every non-head tensor loaded from the weights.

    Raises:
        ValueError: Unknown model name or bad ``in_chans``/``num_classes``.
        FileNotFoundError: The weights file does not exist.
        WeightsUnavailableError: Hub weights are neither cached nor downloadable.
        WeightsMismatchError: The weights do not fit the architecture (the keys are listed).
        UnsafeFileError: The file holds pickled objects that a safe load refuses.

    Example:
        >>> model = create_backbone("test_resnet", num_classes=4)
        >>> model.get_classifier().out_features
        4
    """
    _check_model_name(name)
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
    if in_chans < 1:
        raise ValueError(f"`in_chans` must be a positive integer, got {in_chans!r}.")
    weights_path: Path | None = None
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        weights_path = Path(pretrained).expanduser()
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"Weights file {str(weights_path)!r} (from `pretrained`) does not exist. Pass the path of a"
                f" {'/'.join(WEIGHT_SUFFIXES)} file, `pretrained: true` for hub weights, or `false`."
            )
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **timm_kwargs)
    if pretrained is True:
        weights_path = resolve_hub_weights(name)
    if weights_path is not None:
        state_dict = load_weights_file(weights_path)
        _load_checked(model, state_dict, source=str(weights_path), in_chans=in_chans)
    return model


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; other files with ``torch.load(weights_only=True)``. A
    Lightning checkpoint's ``state_dict`` and the usual ``{"state_dict" | "model": ...}`` wrappers are unwrapped.

    Args:
        path: The file.

    Returns:
        Parameter name to tensor.

    Raises:
        UnsafeFileError: The file needs a full unpickle (it may run code); the message says how to convert it.
        ValueError: The file holds no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError.for_file(path, err) from None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{str(path)!r} holds no state dict of tensors (found {type(payload).__name__}).")
    return payload


def _strip_prefix(state_dict: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefix (``backbone.``, ``model.``, ``_orig_mod.``) that best matches the model's keys."""
    cleaned = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
    best, best_hits = cleaned, -1
    for prefix in _CKPT_PREFIXES:
        candidate = {k[len(prefix) :]: v for k, v in cleaned.items() if k.startswith(prefix)}
        hits = len(model_keys & candidate.keys())
        if hits > best_hits:
            best, best_hits = candidate, hits
    return best


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = (
        cast("dict[str, Any]", model.pretrained_cfg).get("classifier") if hasattr(model, "pretrained_cfg") else None
    )
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    return tuple(f"{n}." for n in names)


def _filtered(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the model family's own checkpoint filter (timm convention), e.g. for original-format ViT files."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None or set(state_dict) <= set(model.state_dict()):
        return state_dict
    try:
        return filter_fn(state_dict, model)
    except Exception:  # a filter for another format; the checked load below reports any mismatch
        return state_dict


def _load_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, in_chans: int) -> None:
    target = model.state_dict()
    state_dict = _filtered(model, _strip_prefix(state_dict, set(target)))
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if first_conv and (key := f"{first_conv}.weight") in state_dict:
        weight = state_dict[key]
        if weight.ndim == 4 and weight.shape[1] != in_chans:
            state_dict[key] = adapt_input_conv(in_chans, weight)
    head = _classifier_prefixes(model)
    is_head = lambda key: key.startswith(head)  # noqa: E731
    mismatched = [k for k, v in state_dict.items() if k in target and v.shape != target[k].shape]
    head_mismatch = [k for k in mismatched if is_head(k)]
    body_mismatch = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
        for k in mismatched
        if not is_head(k)
    ]
    missing = [k for k in target if k not in state_dict and not is_head(k) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in target and not is_head(k)]
    if body_mismatch or missing or unexpected:
        architecture = type(model).__name__
        parts = [f"Weights {source!r} do not fit the backbone ({architecture}):"]
        for label, keys in (("shape mismatch", body_mismatch), ("missing", missing), ("unexpected", unexpected)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        parts.append("Check that `backbone` names the architecture the file was saved from.")
        raise WeightsMismatchError(" ".join(parts))
    for key in head_mismatch:
        del state_dict[key]
    model.load_state_dict(state_dict, strict=False)
    head_note = "a new head" if head_mismatch else "the file's head"
    rank_zero_info(f"Loaded {len(state_dict)} tensors from {source} into {type(model).__name__} with {head_note}.")


def _hub_host() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        with socket.create_connection(_hub_host(), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_hub_weights(name: str) -> Path:
    """Local path of a timm model's hub weights: from the Hugging Face cache, else downloaded.

    Fails within seconds when the weights are not cached and the hub cannot be reached (``HF_HUB_OFFLINE`` set,
    or a 3 s connection probe fails), where timm would spend ~47 s in retries.

    Args:
        name: timm model name with optional tag.

    Returns:
        Path of the cached weights file.

    Raises:
        WeightsUnavailableError: Not cached and not downloadable; the message names the model, its hub id, the
            cache folder and how to pass a local file.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_CACHE

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(
            f"timm has no Hugging Face hub weights for {name!r}. Pass a local file: `pretrained: /path/to/weights"
            ".safetensors`, or pick a tagged name from `timm.list_pretrained('{name.split('.')[0]}*')`."
        )
    assert cfg is not None  # `hub_id` comes from it
    filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for filename in filenames:
        try:
            return Path(hf_hub_download(hub_id, filename, local_files_only=True))
        except Exception:  # not in the cache
            continue
    if _hub_reachable():
        rank_zero_info(f"Downloading {name} weights from the hub ({hub_id}).")
        for filename in filenames:
            try:
                return Path(hf_hub_download(hub_id, filename))
            except Exception:  # try the next file name
                continue
    raise WeightsUnavailableError(
        f"Pretrained weights for {name!r} (hub id {hub_id!r}) are not in the Hugging Face cache ({HF_HUB_CACHE}) and"
        " the hub cannot be reached (offline, or HF_HUB_OFFLINE is set). Either download them once on a machine with"
        f" network access (`hf download {hub_id}`) and copy the cache folder, or pass a local weights file:"
        " `pretrained: /path/to/weights.safetensors` (YAML) or `TransferClassifier(pretrained='...')`."
    )


def backbone_data_config(backbone: str | nn.Module) -> dict[str, Any]:
    """The preprocessing a backbone expects, from timm's own data config, as plain values.

    Args:
        backbone: A timm model name (with tag) or a timm model.

    Returns:
        ``{"input_size": [C, H, W], "mean": [...], "std": [...], "interpolation": str, "crop_pct": float}``.

    Example:
        >>> cfg = backbone_data_config("vit_base_patch16_224.augreg_in21k_ft_in1k")
        >>> cfg["mean"], cfg["crop_pct"]
        ([0.5, 0.5, 0.5], 0.9)
    """
    from timm.data import resolve_data_config, resolve_model_data_config

    if isinstance(backbone, nn.Module):
        config = resolve_model_data_config(backbone)
    else:
        _check_model_name(backbone)
        pretrained_cfg = timm.models.get_pretrained_cfg(backbone)
        config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else {})
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct")
    return {k: list(config[k]) if isinstance(config[k], tuple) else config[k] for k in keys}
