"""Albumentations pipelines given as data (YAML, JSON, dicts) and their ``Normalize`` → ``ToTensorV2`` tail.

Accepted forms of a user pipeline:

- a list of ``{class_path: albumentations.X, init_args: {...}}`` entries (the LightningCLI style; nested
  ``transforms`` of ``OneOf``/``Compose`` may use the same form);
- Albumentations' own serialised form, as written by ``A.to_dict(pipeline)`` (``{"transform": {...}}``) or a bare
  ``{"__class_fullname__": ...}`` dictionary — read by ``A.from_dict``;
- a path to a ``.yaml``/``.yml``/``.json`` file holding either form (YAML is read with ``yaml.safe_load``);
- an Albumentations transform object.

Every pipeline ends with ``Normalize(mean, std)`` then ``ToTensorV2`` (pitfall H2): they are appended when
missing, and a ``ToTensorV2`` anywhere but last is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import yaml
from albumentations.pytorch import ToTensorV2
from lightning.pytorch.utilities import rank_zero_warn

PipelineSpec = str | os.PathLike | Sequence[Mapping[str, Any]] | Mapping[str, Any] | A.BasicTransform | A.BaseCompose
"""A pipeline as Python object, list of ``class_path`` entries, ``A.to_dict`` form, or file path."""


def _class_path_to_albu(entry: Any, where: str) -> dict[str, Any]:
    """Rewrite one ``{class_path, init_args}`` entry into the dictionary ``A.from_dict`` reads."""
    if not isinstance(entry, Mapping) or "class_path" not in entry:
        raise ValueError(f"{where} must be a mapping with a `class_path` key, got {entry!r}.")
    class_path = str(entry["class_path"])
    module, _, name = class_path.rpartition(".")
    if module and module.split(".")[0] != "albumentations":
        raise ValueError(f"{where}: `class_path` must name an Albumentations transform, got {class_path!r}.")
    extra = set(entry) - {"class_path", "init_args"}
    if extra:
        raise ValueError(f"{where} has unknown keys {sorted(extra)}; use `class_path` and `init_args`.")
    init_args = dict(entry.get("init_args") or {})
    if "transforms" in init_args:
        init_args["transforms"] = [
            _class_path_to_albu(sub, f"{where}.init_args.transforms[{i}]")
            for i, sub in enumerate(init_args["transforms"])
        ]
    return {"__class_fullname__": name, **init_args}


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
        entries = [_class_path_to_albu(entry, f"train_transform[{i}]") for i, entry in enumerate(spec)]
        return load_pipeline(A.from_dict({"transform": {"__class_fullname__": "Compose", "transforms": entries}}))
    raise TypeError(
        "`train_transform` must be a preset name, a file path, a list of `class_path` entries, an `A.to_dict` "
        f"mapping or an Albumentations transform, got {type(spec).__name__}."
    )


def _nested_to_tensor(transform: Any) -> bool:
    children = getattr(transform, "transforms", None) or []
    return any(isinstance(c, ToTensorV2) or _nested_to_tensor(c) for c in children)


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
    has_tensor = bool(steps) and isinstance(steps[-1], ToTensorV2)
    body = steps[:-1] if has_tensor else steps
    normalizers = [s for s in body if isinstance(s, A.Normalize)]
    if not normalizers:
        body.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    else:
        user = normalizers[-1]
        if user.mean is not None and tuple(map(float, user.mean)) != tuple(map(float, mean)):
            rank_zero_warn(
                f"The pipeline's Normalize(mean={user.mean}) differs from the backbone's mean {tuple(mean)}; "
                "remove it to use the backbone's statistics."
            )
    return A.Compose([*body, ToTensorV2()])
