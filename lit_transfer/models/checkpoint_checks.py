"""A checkpoint checked against the model before its weights load: every tensor present, in its shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lit_transfer.errors import CheckpointMismatchError

__all__ = ["check_checkpoint_fits"]


def check_checkpoint_fits(
    current: Mapping[str, torch.Tensor], checkpoint: dict[str, Any], hparams: Mapping[str, Any], head: str
) -> None:
    """Refuse a checkpoint that lacks a tensor of the model, or holds one of another shape.

    Args:
        current: The model's ``state_dict()``.
        checkpoint: The loaded checkpoint.
        hparams: The model's hyper-parameters (``backbone``, named in the message).
        head: The model's head in words (``"3 classes"``, ``"2 outputs"``).

    Raises:
        CheckpointMismatchError: Listing the tensors, with the two ways out (resume with the checkpoint's own
            settings, or load only its backbone weights).
    """
    saved = checkpoint.get("hyper_parameters", {})
    state = checkpoint.get("state_dict", {})
    wrong = [k for k in current if k not in state or state[k].shape != current[k].shape]
    if not wrong:
        return
    shown = ", ".join(wrong[:6]) + (f", ... ({len(wrong)} in all)" if len(wrong) > 6 else "")
    raise CheckpointMismatchError(
        f"The checkpoint (a {saved.get('backbone', 'different')!r} model) does not fit this run's"
        f" {hparams['backbone']!r} with {head}: tensors missing or of"
        f" another shape: {shown}. Resume with the"
        " checkpoint's own `backbone` and head (`num_classes`/`num_outputs`, `task`), or start a new run that loads"
        " only its backbone weights"
        " (`pretrained: <checkpoint.ckpt>`)."
    )
