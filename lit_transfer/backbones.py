"""Create timm backbones with pretrained weights through timm's own machinery, offline first.

``pretrained=True`` is ``timm.create_model(name, pretrained=True)``: timm finds the tag's weights on the Hugging Face
hub (``hf-hub:org/repo`` and ``local-dir:/folder`` names included), adapts the stem to ``in_chans`` and loads them. A
local weights file (``.safetensors``, ``.pth``/``.pt``/``.bin``) goes through timm too, as
``pretrained_cfg_overlay=dict(file=...)``. Only a file whose keys carry a wrapper's prefix (a Lightning ``.ckpt``'s
``backbone.``) is read here (safetensors or ``torch.load(weights_only=True)``, never a full unpickle) and handed to
timm as ``pretrained_cfg_overlay=dict(state_dict=...)`` without the prefix.

What this module adds to timm:

* **No silent partial loads.** timm loads weights non-strictly when the head changes and only logs what was missing.
  Here timm loads them strictly, into a head of the size they were saved with, and ``reset_classifier`` then gives
  the new head: a backbone tensor missing from the weights, or of another shape, is a
  :class:`~lit_transfer.errors.WeightsMismatchError` that lists the keys.
* **Offline in seconds.** Before timm touches the hub, a 3 s probe through huggingface_hub's own HTTP session (so
  ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` and a custom client factory apply) decides whether it is reachable.
  When it is not, or ``HF_HUB_OFFLINE`` is set (even after import), timm reads the Hugging Face cache only; weights
  that are not there raise :class:`~lit_transfer.errors.WeightsUnavailableError` naming the model, its hub id and
  the fix, instead of timm's ~47 s of retries.
"""

from __future__ import annotations

import argparse
import difflib
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.error import URLError

import timm
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_transfer._compat import hub_offline
from lit_transfer.errors import UnsafeFileError, WeightsMismatchError, WeightsUnavailableError
from lit_transfer.files.checks import check_weights_file

__all__ = [
    "backbone_data_config",
    "create_backbone",
    "has_timm_head_api",
    "hub_reachable",
    "linear_classifier",
    "load_weights_file",
    "single_classifier",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict")
"""Where a checkpoint file keeps its weights, in timm's order of preference (EMA weights first)."""
_PROBE_TIMEOUT_S = 3.0


def _source(name: str) -> str | None:
    """``"hf-hub"`` or ``"local-dir"`` for a name with that prefix, ``None`` for a timm registry name."""
    try:
        return timm.models.parse_model_name(name)[0]
    except ValueError as err:  # "org/repo" without "hf-hub:", an unknown prefix
        raise ValueError(f"Backbone {name!r}: {err}") from None


def _check_model_name(name: str) -> None:
    if _source(name) is not None:
        return  # the architecture comes from the repository's or folder's config.json
    architecture, _ = timm.models.split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown timm backbone {name!r}.{hint} `timm.list_models('*pattern*')` lists the names; weights of"
            " a Hugging Face hub repository are named `hf-hub:org/repo`."
        )


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool | str | Path = False,
    in_chans: int = 3,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a timm model with a fresh ``num_classes`` head and (optionally) pretrained weights.

    Args:
        name: timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``), or a hub repository
            (``"hf-hub:timm/resnet50.a1_in1k"``) or local folder (``"local-dir:/models/resnet50"``) in timm's format.
        num_classes: Classes of the new head.
        pretrained: ``True`` for the name's hub weights, ``False`` for random init, or the path of a local
            weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``, Lightning ``.ckpt``).
        in_chans: Input channels; pretrained RGB stems are adapted by timm.
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
    if pretrained is False or pretrained is None:
        with _hub_access(name, needed=_source(name) == "hf-hub"):
            return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **timm_kwargs)
    if pretrained is True:
        with _hub_access(name, needed=_source(name) != "local-dir"):
            cfg = _pretrained_cfg(name)
            if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
                raise WeightsUnavailableError(
                    f"timm has no pretrained weights for {name!r}. Pick a tagged name from"
                    f" `timm.list_pretrained('{name.split('.')[0]}*')`, or pass a local file: `--model.pretrained"
                    " path/to/weights.safetensors` (YAML `pretrained: path/to/weights.safetensors`)."
                )
            model = _create_strict(name, str(cfg.get("hf_hub_id") or name), in_chans, {}, timm_kwargs)
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Weights file {str(path)!r} (from `pretrained`) does not exist. Pass the path of a"
                f" {'/'.join(WEIGHT_SUFFIXES)} file, `pretrained: true` for hub weights, or `false`."
            )
        check_weights_file(path)  # empty, cut short or random bytes: one line naming the file
        with _hub_access(name, needed=_source(name) == "hf-hub"):
            overlay = _file_overlay(path, _pretrained_cfg(name))
            model = _create_strict(name, str(path), in_chans, overlay, timm_kwargs)
    loaded: dict[str, Any] = getattr(model, "pretrained_cfg", {})
    loaded.pop("state_dict", None)  # handed over for the load only: do not keep the tensors alive
    source = loaded.get("hf_hub_id") if pretrained is True else str(pretrained)
    kept = getattr(model, "num_classes", None) == num_classes
    if not kept:
        cast("Any", model).reset_classifier(num_classes)
    head = "the weights' own head" if kept else f"a new {num_classes}-output head"
    rank_zero_info(f"Loaded {name} weights from {source} with {head}.")
    return model


def _pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained config timm resolves for ``name`` (a ``hf-hub:`` name reads the repository's ``config.json``)."""
    return dict(timm.models.resolve_model_input_args(name)["pretrained_cfg"])


def _create_strict(
    name: str, source: str, in_chans: int, overlay: dict[str, Any], timm_kwargs: dict[str, Any]
) -> nn.Module:
    """``timm.create_model(pretrained=True)`` with the weights' own head size, so that timm's load is strict."""
    head = overlay.get("num_classes")
    kwargs = {**timm_kwargs, **({"num_classes": head} if head is not None else {})}
    try:
        return timm.create_model(
            name, pretrained=True, in_chans=in_chans, pretrained_cfg_overlay=overlay or None, **kwargs
        )
    except RuntimeError as err:
        report = _mismatch_report(name, source, overlay, in_chans, kwargs)
        if report is None and "state_dict" not in str(err):
            raise
        raise WeightsMismatchError(
            report or f"Weights {source!r} do not fit the backbone {name!r}: {str(err).strip()}"
        ) from err


# ------------------------------------------------------------------------------------------------ local files


def _torch_payload(path: Path, mmap: bool) -> Any:
    """``torch.load(weights_only=True)``; timm training checkpoints' ``argparse.Namespace`` is allowed, as in timm."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError.for_file(path, err) from None
    except RuntimeError:
        if not mmap:
            raise
        return _torch_payload(path, mmap=False)  # a legacy (non-zip) file cannot be memory-mapped


def load_weights_file(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from a weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; other files with ``torch.load(weights_only=True)``. The
    weights are taken from a checkpoint's ``state_dict_ema``, ``model_ema``, ``state_dict`` or ``model`` entry (in
    that order, as timm does), and DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes are removed.

    Args:
        path: The file.
        mmap: Map the file's tensors instead of reading them (a cheap look at the names and shapes).

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
    payload = _torch_payload(path, mmap)
    if isinstance(payload, dict):
        key = next((k for k in _STATE_DICT_KEYS if isinstance(payload.get(k), dict)), None)
        payload = payload[key] if key else payload
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{str(path)!r} holds no state dict of tensors (found {type(payload).__name__}).")
    return timm.models.clean_state_dict(payload)


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a weights file's tensors, read without loading the tensors."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    return {key: tuple(value.shape) for key, value in load_weights_file(path, mmap=True).items()}


def _names(cfg: dict[str, Any], key: str) -> tuple[str, ...]:
    value = cfg.get(key)
    return (value,) if isinstance(value, str) else tuple(value or ())


def _wrapper_prefix(shapes: dict[str, tuple[int, ...]], cfg: dict[str, Any]) -> str:
    """The prefix a wrapper put before the backbone's keys (``backbone.`` in a Lightning checkpoint), or ``""``.

    It is what precedes the stem's (or head's) key, provided most of the file's keys start with it: the
    ``layer1.0.`` before another architecture's ``layer1.0.conv1.weight`` is not a wrapper.
    """
    anchors = [f"{n}.weight" for n in (*_names(cfg, "first_conv"), *_names(cfg, "classifier"))]
    if not anchors or any(a in shapes for a in anchors):
        return ""
    prefixes = {key[: -len(a)] for a in anchors for key in shapes if key.endswith(f".{a}")}
    wrappers = [p for p in prefixes if 2 * sum(key.startswith(p) for key in shapes) >= len(shapes)]
    return min(wrappers, key=len) if wrappers else ""


def _file_overlay(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that makes timm load ``path`` strictly.

    It holds the file (or its state dict without a wrapper's prefix), the head size the weights were saved with (0:
    no head) and, when it differs from the config's, their stem's input channels.
    """
    shapes = _shapes(path)
    prefix = _wrapper_prefix(shapes, cfg)
    overlay: dict[str, Any] = {"file": str(path)}
    if prefix:  # timm cannot strip it: read the file here and hand timm the backbone's tensors
        state_dict = load_weights_file(path)
        shapes = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
        overlay = {"state_dict": {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}}
    heads = [shapes[f"{n}.weight"] for n in _names(cfg, "classifier") if f"{n}.weight" in shapes]
    overlay["num_classes"] = heads[0][0] if heads else 0
    stems = [shapes[f"{n}.weight"] for n in _names(cfg, "first_conv") if f"{n}.weight" in shapes]
    input_size = tuple(cfg.get("input_size") or (3, 224, 224))
    if stems and len(stems[0]) == 4 and stems[0][1] != input_size[0]:
        overlay["input_size"] = (stems[0][1], *input_size[1:])
    return overlay


def _mismatch_report(
    name: str, source: str, overlay: dict[str, Any], in_chans: int, kwargs: dict[str, Any]
) -> str | None:
    """What does not fit between local weights and the backbone (keys listed), or ``None`` when nothing is found."""
    if "state_dict" in overlay:
        weights = {k: tuple(v.shape) for k, v in overlay["state_dict"].items()}
    elif "file" in overlay:
        weights = _shapes(Path(overlay["file"]))
    else:
        return None
    model = timm.create_model(name, in_chans=in_chans, **kwargs)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    stems = {f"{n}.weight" for n in _names(getattr(model, "pretrained_cfg", {}), "first_conv")}

    def fits(key: str) -> bool:  # a stem's input channels are adapted by timm
        file, ours = weights[key], target[key]
        return file == ours or (key in stems and file[:1] + file[2:] == ours[:1] + ours[2:])

    shape_mismatch = [f"{k}: file {weights[k]} vs model {target[k]}" for k in target if k in weights and not fits(k)]
    missing = [k for k in target if k not in weights]
    unexpected = [k for k in weights if k not in target and not k.endswith("num_batches_tracked")]
    if not (shape_mismatch or missing or unexpected):
        return None
    parts = [f"Weights {source!r} do not fit the backbone ({type(model).__name__}):"]
    for label, keys in (("shape mismatch", shape_mismatch), ("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            parts.append(f"{label}: {shown}")
    parts.append("Check that `backbone` names the architecture the file was saved from.")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------ the hub


def _offline_requested() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or flag in {"1", "true", "yes", "on", "y", "t"}


def hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds, asked the way huggingface_hub asks it.

    The probe is a ``HEAD`` request to the hub's endpoint (``HF_ENDPOINT``) through ``huggingface_hub``'s own HTTP
    session: its proxy settings (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), certificates and any client factory
    set with ``huggingface_hub.set_client_factory`` apply. ``HF_HUB_OFFLINE`` answers ``False`` at once.

    Args:
        timeout: Seconds to wait for the connection and the answer.

    Returns:
        ``True`` when the hub (or the proxy in front of it) answered without a server or proxy error.
    """
    if _offline_requested():
        return False
    from huggingface_hub import constants, get_session

    try:
        response = get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception:  # any transport failure (refused, DNS, timeout, proxy refusal) means unreachable
        return False
    return response.status_code < 500 and response.status_code != 407


def _hub_id(name: str) -> str:
    source = _source(name)
    if source == "hf-hub":
        return name.split(":", 1)[1]
    cfg = timm.models.get_pretrained_cfg(name) if source is None else None
    return str(getattr(cfg, "hf_hub_id", None) or "?")


@contextmanager
def _hub_access(name: str, needed: bool) -> Iterator[None]:
    """Run timm's hub calls for ``name`` offline-first: from the cache only when the hub is unreachable.

    A hub failure inside becomes a :class:`WeightsUnavailableError` naming the model, its hub id and the fix.
    """
    if not needed:
        yield
        return
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    offline = not hub_reachable()
    try:
        with hub_offline(offline):
            yield
    except (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, URLError) as err:
        hub_id = _hub_id(name)
        fix = (
            f"Either download them once on a machine with network access (`hf download {hub_id}`) and copy the"
            " cache folder, or pass a local weights file: `--model.pretrained path/to/weights.safetensors`"
            " (YAML `pretrained: path/to/weights.safetensors`, Python `pretrained='...'`)."
        )
        if offline:
            why = (
                f"are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub cannot be reached"
                " (offline, HF_HUB_OFFLINE is set, or the proxy refused)"
            )
        else:
            why = f"could not be downloaded from the hub ({type(err).__name__}: {str(err).strip().splitlines()[0]})"
        raise WeightsUnavailableError(f"Pretrained weights for {name!r} (hub id {hub_id!r}) {why}. {fix}") from err


# ------------------------------------------------------------------------------------------------ data config


def _built_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The ``(height, width)`` a ViT-like timm model's patch embedding was built for (its ``img_size``), else ``None``.

    Example:
        >>> _built_input_size(timm.create_model("test_vit", img_size=64))
        (64, 64)
        >>> _built_input_size(timm.create_model("test_resnet")) is None
        True
    """
    from timm.layers import PatchEmbed

    for module in model.modules():
        if isinstance(module, PatchEmbed) and module.img_size is not None:
            height, width = tuple(module.img_size)  # type: ignore[arg-type]
            return int(height), int(width)
    return None


def backbone_data_config(backbone: str | nn.Module) -> dict[str, Any]:
    """The preprocessing a backbone expects, from timm's own data config, as plain values.

    Args:
        backbone: A timm model name (with tag, or ``hf-hub:``/``local-dir:``) or a timm model (whose input size is the
            one it was built for: a ViT built with ``img_size`` reports that size, not its architecture's default).

    Returns:
        ``{"input_size": [C, H, W], "mean": [...], "std": [...], "interpolation": str, "crop_pct": float,
        "crop_mode": str}``.

    Example:
        >>> cfg = backbone_data_config("vit_base_patch16_224.augreg_in21k_ft_in1k")
        >>> cfg["mean"], cfg["crop_pct"]
        ([0.5, 0.5, 0.5], 0.9)
    """
    from timm.data import resolve_data_config, resolve_model_data_config

    if isinstance(backbone, nn.Module):
        config = dict(resolve_model_data_config(backbone))
        built = _built_input_size(backbone)
        if built is not None:  # built with `img_size`: timm's config still names the architecture's default
            config["input_size"] = (config["input_size"][0], *built)
    else:
        _check_model_name(backbone)
        with _hub_access(backbone, needed=_source(backbone) == "hf-hub"):
            config = resolve_data_config(pretrained_cfg=_pretrained_cfg(backbone))
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
    return {k: list(config[k]) if isinstance(config[k], tuple) else config[k] for k in keys if k in config}


def has_timm_head_api(backbone: nn.Module) -> bool:
    """Whether the backbone has timm's ``get_classifier``, ``forward_features`` and ``forward_head``."""
    names = ("get_classifier", "forward_head", "forward_features")
    return all(callable(getattr(backbone, name, None)) for name in names)


def single_classifier(backbone: nn.Module) -> nn.Module | None:
    """``backbone.get_classifier()``, or ``None`` without timm's head API or for a head of several modules.

    ``None`` when the model lacks :func:`has_timm_head_api`'s methods, or when its classifier is not one module (e.g.
    LeViT's pair of heads).
    """
    if not has_timm_head_api(backbone):
        return None
    classifier = cast("Callable[[], object]", backbone.get_classifier)()  # timm API, not on `nn.Module`
    return classifier if isinstance(classifier, nn.Module) else None


def linear_classifier(backbone: nn.Module) -> nn.Linear | None:
    """The timm backbone's classifier when it is one ``nn.Linear`` on its pre-logit features, else ``None``."""
    classifier = single_classifier(backbone)
    return classifier if isinstance(classifier, nn.Linear) else None
