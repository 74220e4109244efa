"""Albumentations pipelines given as data (YAML, JSON, dicts) and their ``Normalize`` → ``ToTensorV2`` tail.

Accepted forms of a user pipeline:

- a list of ``{class_path: albumentations.X, init_args: {...}}`` entries (the LightningCLI style; nested
  ``transforms`` of ``OneOf``/``Compose`` may use the same form);
- Albumentations' own serialised form, as written by ``A.to_dict(pipeline)`` (``{"transform": {...}}``) or a bare
  ``{"__class_fullname__": ...}`` dictionary — read by ``A.from_dict``;
- a path to a ``.yaml``/``.yml``/``.json`` file holding either form (YAML is read with ``yaml.safe_load``);
- an Albumentations transform object.

Every pipeline ends with ``Normalize(mean, std)`` then ``ToTensorV2``: they are appended when
missing, and a ``ToTensorV2`` anywhere but last is an error.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import albumentations as A
import numpy as np
import yaml
from albumentations.pytorch import ToTensorV2
from lightning.pytorch.utilities import rank_zero_warn

PipelineSpec: TypeAlias = (
    str | os.PathLike | Sequence[Mapping[str, Any]] | Mapping[str, Any] | A.BasicTransform | A.BaseCompose
)
"""A pipeline as Python object, list of ``class_path`` entries, ``A.to_dict`` form, or file path."""

TransformArg = list[dict[str, Any]] | dict[str, Any] | str
"""What a DataModule's ``train_transform`` is annotated with, so LightningCLI/jsonargparse keeps YAML lists and
mappings as data (a plain ``str`` first in the union would swallow them). Albumentations objects are accepted at
runtime too."""


def _plain(value: Any) -> Any:
    """Turn jsonargparse ``Namespace`` objects (it converts nested ``class_path`` dicts) back into dicts."""
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict) and not isinstance(value, Mapping):
        value = as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build_class_path(entry: Any, where: str) -> A.BasicTransform | A.BaseCompose:
    """Instantiate one ``{class_path, init_args}`` entry with the transform's own defaults.

    (Going through ``A.from_dict`` would silently turn a missing ``p`` into 0.5, even for ``Normalize``.)
    """
    if isinstance(entry, (A.BasicTransform, A.BaseCompose)):  # already built (jsonargparse does nested ones)
        return entry
    entry = _plain(entry)
    if not isinstance(entry, Mapping) or "class_path" not in entry:
        raise ValueError(f"{where} must be a mapping with a `class_path` key, got {entry!r}.")
    extra = set(entry) - {"class_path", "init_args"}
    if extra:
        raise ValueError(f"{where} has unknown keys {sorted(extra)}; use `class_path` and `init_args`.")
    class_path = str(entry["class_path"])
    module_name, _, name = class_path.rpartition(".")
    if module_name.split(".")[0] != "albumentations":
        raise ValueError(f"{where}: `class_path` must name an Albumentations transform, got {class_path!r}.")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}: cannot import `class_path` {class_path!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise ValueError(f"{where}: {class_path!r} is not an Albumentations transform.")
    init_args = dict(entry.get("init_args") or {})
    if "transforms" in init_args:
        init_args["transforms"] = [
            _build_class_path(sub, f"{where}.init_args.transforms[{i}]")
            for i, sub in enumerate(init_args["transforms"])
        ]
    return cls(**init_args)


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"Augmentation pipeline file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def load_pipeline(spec: PipelineSpec) -> list[A.BasicTransform | A.BaseCompose]:
    """Build the transforms of a user pipeline (without adding anything).

    Args:
        spec: Any accepted form (see the module docstring); a ``str`` is a file path.

    Returns:
        The top-level transforms, in order (an outer ``Compose`` is unwrapped).

    Example:
        >>> steps = load_pipeline([{"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.3}}])
        >>> type(steps[0]).__name__, steps[0].p
        ('HorizontalFlip', 0.3)
    """
    if isinstance(spec, (str, os.PathLike)):
        return load_pipeline(_read_file(Path(spec)))
    if isinstance(spec, A.BaseCompose) and type(spec) is A.Compose:
        return list(spec.transforms)
    if isinstance(spec, (A.BasicTransform, A.BaseCompose)):
        return [spec]
    if isinstance(spec, Mapping):
        if "class_path" in spec:
            spec = [spec]
        else:
            data = dict(spec) if "transform" in spec else {"transform": dict(spec)}
            if "__class_fullname__" not in data["transform"]:
                raise ValueError(
                    "A pipeline mapping must be Albumentations' serialised form (`A.to_dict(...)`, with "
                    f"`__class_fullname__`) or a `class_path` entry, got keys {sorted(spec)}."
                )
            return load_pipeline(A.from_dict(data))
    if isinstance(spec, Sequence):
        return [_build_class_path(entry, f"train_transform[{i}]") for i, entry in enumerate(spec)]
    raise TypeError(
        "`train_transform` must be a preset name, a file path, a list of `class_path` entries, an `A.to_dict` "
        f"mapping or an Albumentations transform, got {type(spec).__name__}."
    )


def _nested_to_tensor(transform: Any) -> bool:
    children = getattr(transform, "transforms", None) or []
    return any(isinstance(c, ToTensorV2) or _nested_to_tensor(c) for c in children)


def check_tail(transforms: Sequence[A.BasicTransform | A.BaseCompose]) -> None:
    """Raise ``ValueError`` unless ``ToTensorV2`` is absent or the last top-level step."""
    steps = list(transforms)
    for i, step in enumerate(steps):
        if isinstance(step, ToTensorV2) and i != len(steps) - 1:
            later = ", ".join(type(s).__name__ for s in steps[i + 1 :])
            raise ValueError(
                f"`ToTensorV2` must be the last step of the pipeline, but it is followed by {later}: move it to "
                "the end (after `Normalize`), or drop it and let lit_transfer append `Normalize` + `ToTensorV2`."
            )
        if _nested_to_tensor(step):
            raise ValueError(
                f"`ToTensorV2` is nested inside {type(step).__name__}; it must be the last top-level step."
            )


def finalize_pipeline(
    transforms: Sequence[A.BasicTransform | A.BaseCompose], mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """Validate the tail of a pipeline and complete it with ``Normalize`` and ``ToTensorV2``.

    Args:
        transforms: Top-level transforms.
        mean: Normalisation mean (0-1 range), used when ``Normalize`` must be appended.
        std: Normalisation standard deviation (0-1 range).

    Returns:
        ``A.Compose`` ending in ``Normalize`` → ``ToTensorV2``.

    Raises:
        ValueError: ``ToTensorV2`` is not the last step, or sits inside a nested ``OneOf``/``Compose``.
    """
    check_tail(transforms)
    steps = list(transforms)
    has_tensor = bool(steps) and isinstance(steps[-1], ToTensorV2)
    body = steps[:-1] if has_tensor else steps
    normalizers = [s for s in body if isinstance(s, A.Normalize)]
    if not normalizers:
        body.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    elif normalizers[-1].mean is not None:
        user_mean = np.broadcast_to(np.asarray(normalizers[-1].mean, dtype=float), (len(mean),))
        if not np.allclose(user_mean, mean):
            rank_zero_warn(
                f"The pipeline's Normalize(mean={normalizers[-1].mean}) differs from the backbone's mean "
                f"{tuple(mean)}; remove it to use the backbone's statistics."
            )
    return A.Compose([*body, ToTensorV2()])
