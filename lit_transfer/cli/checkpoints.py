"""The CLI's checkpoint arguments: ``--ckpt_path last|best``, the checkpoint's backbone and preprocessing.

``--ckpt_path last`` and ``--ckpt_path best`` pick the newest run's ``last.ckpt`` / ``best.ckpt`` under
``<default_root_dir>/lightning_logs``; ``fit`` then continues in a new ``version_N`` directory. The model is rebuilt
from the checkpoint's hyper-parameters (no hub download), and the DataModule preprocesses as the checkpoint was
trained. Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.cli.arguments import command_line_value
from lit_transfer.cli.run_files import LOGS_NAME, find_last_checkpoint

__all__ = ["CheckpointArguments", "saved_training_facts"]


def saved_training_facts(ckpt_path: str) -> dict[str, Any]:
    """The hyper-parameters and the recorded preprocessing of a checkpoint (a safe, weights-only load)."""
    checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    return {"hparams": checkpoint.get("hyper_parameters") or {}, "data_config": checkpoint.get("data_config")}


class CheckpointArguments(LightningCLI):
    """The checkpoint half of :class:`~lit_transfer.cli.TransferCLI`: resolves and checks ``--ckpt_path``."""

    _argv: list[str]
    _checkpoint_hparams: dict[str, Any]
    _trained_data_config: dict[str, Any] | None

    @override
    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last|best``, rebuild the model from the checkpoint, preprocess as it was trained."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        sub = self.config[subcommand]
        self._resolve_named_checkpoint(sub, subcommand)
        ckpt_path = sub.get("ckpt_path")
        if not ckpt_path:
            return
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(
                f"`--ckpt_path` {ckpt_path!r} does not exist. Pass a `.ckpt` written by `fit`, or `last` / `best` for"
                f" the newest run under `trainer.default_root_dir` ({sub.trainer.default_root_dir!r})."
            )
        saved = saved_training_facts(ckpt_path)
        self._check_backbone(saved["hparams"], ckpt_path)
        self._checkpoint_hparams = saved["hparams"]
        self._trained_data_config = saved["data_config"]
        super()._parse_ckpt_path()
        model = self.config[subcommand].model
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        if init_args is not None and init_args.get("pretrained") not in (None, False):
            init_args.pretrained = False  # every weight comes from the checkpoint: no hub download, no file needed
        self._use_trained_preprocessing(sub, saved["data_config"])

    def _resolve_named_checkpoint(self, sub: Namespace, subcommand: str) -> None:
        """Replace ``last`` / ``best`` by the newest such file under ``default_root_dir``."""
        which = sub.get("ckpt_path")
        if which not in ("last", "best"):
            return
        root = sub.trainer.default_root_dir or "."
        found = find_last_checkpoint(root, which)
        if found is not None:
            rank_zero_info(
                f"Using {found}" + ("; this run logs to a new version directory." if subcommand == "fit" else ".")
            )
            sub.ckpt_path = str(found)
        elif subcommand == "fit" and which == "last":
            rank_zero_info(f"No last.ckpt under {Path(root, LOGS_NAME)}: this fit starts a new run.")
            sub.ckpt_path = None
        else:
            raise FileNotFoundError(
                f"`--ckpt_path {which}` found no {which}.ckpt under {str(Path(root, LOGS_NAME))!r}. Pass the"
                " checkpoint's path, or the `--trainer.default_root_dir` (or the same `--config` files) the fit used."
            )

    def _check_backbone(self, hparams: dict[str, Any], ckpt_path: str) -> None:
        """Refuse a ``--model.backbone`` on the command line that differs from the checkpoint's backbone."""
        saved = hparams.get("backbone")
        flag, given = command_line_value(self._argv, "model", "backbone") or (None, None)
        if given is not None and saved is not None and given != saved:
            raise ValueError(
                f"`{flag} {given}` differs from the backbone of the checkpoint {ckpt_path!r}, which is"
                f" {saved!r}. The checkpoint's weights only fit its own backbone: drop `{flag}`, or to start"
                f" a new {given} model from this checkpoint's backbone weights, `fit` without `--ckpt_path`"
                f" and pass `--model.pretrained {ckpt_path}` (the backbones must match)."
            )

    def _use_trained_preprocessing(self, sub: Namespace, data_config: dict[str, Any] | None) -> None:
        """Give the DataModule the input size and normalisation the checkpoint was trained with."""
        data = sub.get("data")
        init_args = data.get("init_args") if isinstance(data, Namespace) else None
        if not data_config or init_args is None or "data_config" not in init_args:
            return
        init_args.data_config = dict(data_config)  # the link gives the same when it is applied again
        _, height, width = data_config["input_size"]
        explicit_size = command_line_value(self._argv, "data", "image_size") is not None
        if "image_size" in init_args and not explicit_size and height == width:
            init_args.image_size = int(height)
