"""The CLI's checkpoint arguments: ``--ckpt_path last|best``, the checkpoint's backbone and preprocessing.

``--ckpt_path last`` and ``--ckpt_path best`` pick the newest run's ``last.ckpt`` / ``best.ckpt`` under
``<default_root_dir>/lightning_logs`` that loads: a file that is empty or cut short is named, with what is wrong, and
the next newest is used (none loads: exit 2 saying so); ``fit`` then continues in a new ``version_N`` directory. A
checkpoint passed by path that does not load ends the command with one line naming it. The model is rebuilt from the
checkpoint's hyper-parameters (no hub download), and the DataModule preprocesses as the checkpoint was trained; what a
resumed ``fit`` may change is :mod:`lit_transfer.cli.resume`'s. Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.cli.arguments import command_line_value
from lit_transfer.cli.resume import check_resume
from lit_transfer.cli.run_files import LOGS_NAME, checkpoint_candidates
from lit_transfer.errors import CorruptFileError
from lit_transfer.files.atomic import remove_stale_temp_files
from lit_transfer.files.checks import checkpoint_problem, load_torch_file

__all__ = ["CheckpointArguments", "read_checkpoint", "saved_training_facts"]

_OTHER_CHECKPOINT = (
    "Pass another checkpoint of the run (its best.ckpt, last.ckpt or on_exception.ckpt); `--ckpt_path last` picks"
    " the newest last.ckpt that loads."
)


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """A checkpoint, memory-mapped and weights-only (cheap); a broken file raises one line naming it.

    Raises:
        CorruptFileError: The file is empty, cut short, not a PyTorch file, or not a Lightning checkpoint.
        UnsafeFileError: It holds pickled objects a safe load refuses.
    """
    checkpoint = load_torch_file(ckpt_path, hint=_OTHER_CHECKPOINT, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CorruptFileError(
            f"The checkpoint {str(ckpt_path)!r} is not a Lightning checkpoint (it holds no 'state_dict'). A weights"
            f" file goes to `--model.pretrained`. {_OTHER_CHECKPOINT}"
        )
    return checkpoint


def saved_training_facts(ckpt_path: str) -> dict[str, Any]:
    """The hyper-parameters and the recorded preprocessing of a checkpoint (a safe, weights-only load)."""
    checkpoint = read_checkpoint(ckpt_path)
    return {"hparams": checkpoint.get("hyper_parameters") or {}, "data_config": checkpoint.get("data_config")}


def _clean_temp_files(folder: Path) -> None:
    removed = remove_stale_temp_files(folder)
    if removed:
        rank_zero_info(
            f"Removed {len(removed)} unfinished temporary file(s) that an interrupted write left in {folder}"
            f" ({', '.join(p.name for p in removed[:3])}{', ...' if len(removed) > 3 else ''})."
        )


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
        _clean_temp_files(Path(ckpt_path).parent)
        checkpoint = read_checkpoint(ckpt_path)
        hparams = checkpoint.get("hyper_parameters") or {}
        self._check_backbone(hparams, ckpt_path)
        speed_only = check_resume(sub, self._argv, checkpoint, ckpt_path) if subcommand == "fit" else []
        self._checkpoint_hparams = hparams
        self._trained_data_config = checkpoint.get("data_config")
        asked = _init_args(sub, "model")
        kept = {key: asked.get(key) for key in speed_only} if asked is not None else {}
        super()._parse_ckpt_path()
        sub = self.config[subcommand]
        init_args = _init_args(sub, "model")
        if init_args is not None:
            for key, value in kept.items():
                init_args[key] = value  # speed-only settings a resume may change (the checkpoint's were applied)
            if init_args.get("pretrained") not in (None, False):
                init_args.pretrained = False  # every weight comes from the checkpoint: no hub download, no file
        self._use_trained_preprocessing(sub, self._trained_data_config)

    def _resolve_named_checkpoint(self, sub: Namespace, subcommand: str) -> None:
        """Replace ``last`` / ``best`` by the newest such file under ``default_root_dir`` that loads."""
        which = sub.get("ckpt_path")
        if which not in ("last", "best"):
            return
        root = sub.trainer.default_root_dir or "."
        logs = str(Path(root, LOGS_NAME))
        candidates = checkpoint_candidates(root, which)
        broken: list[str] = []
        for path in candidates:
            _clean_temp_files(path.parent)
            problem = checkpoint_problem(path)
            if problem is None:
                skipped = f" (the newest {which}.ckpt that loads)" if broken else ""
                rank_zero_info(
                    f"Using {path}{skipped}"
                    + ("; this run logs to a new version directory." if subcommand == "fit" else ".")
                )
                sub.ckpt_path = str(path)
                return
            broken.append(f"{path} {problem}")
            rank_zero_info(f"Skipping {path}: it {problem}.")
        if broken:
            raise CorruptFileError(
                f"`--ckpt_path {which}`: no {which}.ckpt under {logs!r} loads ({'; '.join(broken)}). Pass a checkpoint"
                " that loads (e.g. the run's on_exception.ckpt or best.ckpt), or start a new run without `--ckpt_path`."
            )
        if subcommand == "fit" and which == "last":
            rank_zero_info(f"No last.ckpt under {logs}: this fit starts a new run.")
            sub.ckpt_path = None
            return
        raise FileNotFoundError(
            f"`--ckpt_path {which}` found no {which}.ckpt under {logs!r}. Pass the checkpoint's path, or the"
            " `--trainer.default_root_dir` (or the same `--config` files) the fit used."
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


def _init_args(sub: Namespace, group: str) -> Namespace | None:
    value = sub.get(group)
    init_args = value.get("init_args") if isinstance(value, Namespace) else None
    return init_args if isinstance(init_args, Namespace) else None
