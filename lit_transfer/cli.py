r"""The ``lit-transfer`` command line: a LightningCLI with the package's classes, links and defaults.

Subcommands ``fit``, ``validate``, ``test`` and ``predict``; several ``--config`` files compose left to right,
so a recipe is a small overlay on ``recipes/defaults.yaml``::

    lit-transfer fit --config recipes/defaults.yaml --config recipes/linear_probe.yaml
    lit-transfer fit --config recipes/defaults.yaml --ckpt_path last          # resume the latest run
    lit-transfer predict --config recipes/defaults.yaml --ckpt_path path/to/best.ckpt \
        --data ImageFolderDataModule --data.root my_images --data.predict_dir my_images/unlabelled

Both ``model`` and ``data`` are in subclass mode: a config names the class (``class_path:
TransferClassifier``, short names resolve for every class the package defines) and its ``init_args``. Once a
file has named the class, later files and the command line may omit ``init_args``: ``model: {freeze:
linear_probe}`` or ``--model.freeze linear_probe``. ``model`` defaults to :class:`TransferClassifier`.

Links, so a recipe never repeats what the data or the backbone already know:

* ``data.num_classes`` → ``model.num_classes`` and ``data.class_names`` → ``model.class_names``, read from the
  DataModule right after its ``__init__``. A ``model.num_classes`` written in a file or on the command line that
  disagrees with the data is an error naming both values and where it was set.
* ``model.backbone`` → ``data.data_config``: input size, mean/std, interpolation and crop fraction from timm's
  pretrained config of that backbone (no download).

The optimizer and scheduler are ``model.optimizer`` / ``model.lr_scheduler`` (class path + init args, no
``params``); :class:`TransferClassifier` builds its named parameter groups itself, so the CLI's automatic
``configure_optimizers`` is off.

Defaults added to every ``fit`` unless the config already has one of the same type (so a recipe's
``trainer.callbacks`` list cannot drop them): :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (best
``val_acc`` plus ``last.ckpt``), :class:`~lightning.pytorch.callbacks.LearningRateMonitor` (per step),
an on-exception checkpoint, and the run report when available. Logs go to ``<default_root_dir>/lightning_logs/
version_N/`` with TensorBoard event files and a ``metrics.csv`` side by side, next to ``checkpoints/`` and the
resolved ``config.yaml``. ``predict`` writes ``<default_root_dir>/predictions.csv`` (see
:class:`~lit_transfer.predict_writer.PredictionCSVWriter`).

Resume: ``fit --ckpt_path last`` picks the newest ``last.ckpt`` under ``<default_root_dir>/lightning_logs`` and
continues in a new ``version_N`` directory (the earlier run's files are never overwritten). Checkpoints are
loaded with ``weights_only=True`` by default; the package's checkpoints hold plain values only.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
)
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.backbones import backbone_data_config
from lit_transfer.models import TransferClassifier
from lit_transfer.predict_writer import PredictionCSVWriter

__all__ = ["TransferCLI", "default_callbacks", "find_last_checkpoint", "main"]

LOGS_NAME = "lightning_logs"
_MODEL_DEFAULT_NUM_CLASSES = inspect.signature(TransferClassifier.__init__).parameters["num_classes"].default
_PACKAGE_MODULES = ("lit_transfer.callbacks", "lit_transfer.data", "lit_transfer.freezing", "lit_transfer.models")
_OPTIONAL_MODULES = ("lit_transfer.callbacks.run_report",)


def _register_package_classes() -> None:
    """Import the package's modules so LightningCLI resolves short class names (``class_path: LayerFreezing``)."""
    for name in _PACKAGE_MODULES + _OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            if name in _PACKAGE_MODULES:
                raise


def _run_report_class() -> type[Callback] | None:
    module = sys.modules.get("lit_transfer.callbacks.run_report")
    return getattr(module, "RunReport", None) if module else None


class _LogDirExceptionCheckpoint(OnExceptionCheckpoint):
    """:class:`OnExceptionCheckpoint` that saves ``on_exception.ckpt`` beside the run's other checkpoints."""

    def __init__(self) -> None:
        super().__init__(dirpath=".", filename="on_exception")

    @override
    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        checkpoint = trainer.checkpoint_callback
        dirpath = getattr(checkpoint, "dirpath", None) if checkpoint is not None else None
        self.dirpath = dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")


def default_callbacks(subcommand: str | None, has_logger: bool, checkpointing: bool) -> list[Callback]:
    """The callbacks every run of ``subcommand`` gets unless one of the same type is already configured.

    Args:
        subcommand: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` (or ``None`` outside a subcommand).
        has_logger: Whether the Trainer logs (the LR monitor needs a logger).
        checkpointing: Whether ``trainer.enable_checkpointing`` is on.

    Returns:
        Fresh callback instances.
    """
    if subcommand == "predict":
        return [PredictionCSVWriter()]
    if subcommand not in (None, "fit"):
        return []
    callbacks: list[Callback] = []
    if checkpointing:
        callbacks.append(
            ModelCheckpoint(
                monitor="val_acc",
                mode="max",
                save_last=True,
                filename="best-epoch{epoch:03d}-val_acc{val_acc:.4f}",
                auto_insert_metric_name=False,
            )
        )
        callbacks.append(_LogDirExceptionCheckpoint())
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    run_report = _run_report_class()
    if run_report is not None:
        callbacks.append(run_report())
    return callbacks


def _merge_callbacks(configured: list[Callback], defaults: Iterable[Callback]) -> list[Callback]:
    """Append each default whose type (or, for prediction writers, base type) is not configured yet."""
    merged = list(configured)
    for callback in defaults:
        kind = BasePredictionWriter if isinstance(callback, BasePredictionWriter) else type(callback)
        if isinstance(callback, OnExceptionCheckpoint):
            kind = OnExceptionCheckpoint
        if not any(isinstance(c, kind) for c in merged):
            merged.append(callback)
    return merged


def _default_loggers(root_dir: str | os.PathLike) -> list[Any]:
    """TensorBoard and CSV loggers writing into the same ``<root>/lightning_logs/version_N`` directory."""
    csv = CSVLogger(save_dir=str(root_dir), name=LOGS_NAME)
    tensorboard = TensorBoardLogger(save_dir=str(root_dir), name=LOGS_NAME, version=csv.version)
    return [csv, tensorboard]  # CSV first: it creates the folder (it warns when it finds one already filled)


def find_last_checkpoint(root_dir: str | os.PathLike) -> Path | None:
    """The newest ``last.ckpt`` under ``<root_dir>/lightning_logs/version_*/checkpoints/``, if any.

    Args:
        root_dir: The Trainer's ``default_root_dir``.

    Returns:
        Path of the most recently written ``last.ckpt`` (``last-v1.ckpt`` and the like included), or ``None``.
    """
    candidates = list(Path(root_dir, LOGS_NAME).glob("version_*/checkpoints/last*.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _where_set(config_files: Iterable[Any], argv: Iterable[str], key: str) -> str | None:
    """Describe where ``model.<key>`` was written: the config file and key, or the command-line flag."""
    for arg in argv:
        for flag in (f"--model.{key}", f"--model.init_args.{key}"):
            if arg == flag or arg.startswith(f"{flag}="):
                return f"command line `{flag}`"
    for path in reversed(list(config_files or [])):
        try:
            content = yaml.safe_load(Path(str(path)).read_text())
        except (OSError, yaml.YAMLError):
            continue
        model = content.get("model") if isinstance(content, dict) else None
        if not isinstance(model, dict):
            continue
        if key in model:
            return f"{path}: `model.{key}`"
        if isinstance(model.get("init_args"), dict) and key in model["init_args"]:
            return f"{path}: `model.init_args.{key}`"
    return None


class TransferCLI(LightningCLI):
    """LightningCLI for :class:`TransferClassifier` and the package's DataModules, callbacks and policies.

    See the module docstring for the links, defaults and resume semantics. Every argument of
    :class:`~lightning.pytorch.cli.LightningCLI` is accepted; the defaults differ: ``model_class`` is
    :class:`TransferClassifier` in subclass mode, ``datamodule_class`` any DataModule in subclass mode,
    ``auto_configure_optimizers=False`` and ``save_config_kwargs={"overwrite": True}``.

    Example:
        >>> cli = TransferCLI(args=["--config", "recipes/defaults.yaml"], run=False)  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _register_package_classes()
        kwargs.setdefault("model_class", TransferClassifier)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        trainer_defaults = {"default_root_dir": "runs", **(kwargs.pop("trainer_defaults", None) or {})}
        kwargs["trainer_defaults"] = trainer_defaults
        self._argv: list[str] = []
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------------- parsing
    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"model": {"class_path": f"{TransferClassifier.__module__}.TransferClassifier"}})
        parser.link_arguments(
            "data", "model.init_args.num_classes", compute_fn=self._num_classes, apply_on="instantiate"
        )
        parser.link_arguments("data", "model.init_args.class_names", compute_fn=_class_names, apply_on="instantiate")
        parser.link_arguments(
            "model.init_args.backbone", "data.init_args.data_config", compute_fn=backbone_data_config, apply_on="parse"
        )

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            parser.set_defaults(weights_only=True)  # checkpoints are never fully unpickled unless asked for
        return parser

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self._argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        super().parse_arguments(parser, args)

    @override
    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last`` to a file, read the model's hyper-parameters from it, skip pretrained."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        sub = self.config[subcommand]
        if sub.get("ckpt_path") == "last":
            last = find_last_checkpoint(sub.trainer.default_root_dir or ".")
            if last is not None:
                rank_zero_info(f"Resuming from {last}; this run logs to a new version directory.")
                sub.ckpt_path = str(last)
        ckpt_path = sub.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        super()._parse_ckpt_path()
        model = self.config[subcommand].model
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        if init_args is not None and init_args.get("pretrained") not in (None, False):
            init_args.pretrained = False  # every weight comes from the checkpoint: no hub download, no file needed

    # ---------------------------------------------------------------- links
    def _num_classes(self, datamodule: Any) -> int:
        """``num_classes`` of the DataModule, checked against an explicit ``model.num_classes``."""
        num_classes = _data_attribute(datamodule, "num_classes")
        config = self.config.get(str(self.subcommand), self.config)
        given = config.model.init_args.get("num_classes") if config.get("model") else None
        where = _where_set(config.get("config"), self._argv, "num_classes")
        explicit = where is not None or (given is not None and given != _MODEL_DEFAULT_NUM_CLASSES)
        if explicit and given != num_classes:
            raise ValueError(
                f"`model.num_classes` is {given} ({where or 'set in the config'}) but the data"
                f" ({type(datamodule).__name__}) has {num_classes} classes. Remove `num_classes` from the model"
                " config: it is linked from the data."
            )
        return num_classes

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        data = config.get("data")
        class_path = data.get("class_path") if isinstance(data, Namespace) else None
        if class_path is None:
            raise ValueError("No DataModule configured: set `data.class_path` (e.g. `DigitsDataModule`) in a config.")
        data_class = _import_class(class_path)
        if "data_config" not in inspect.signature(data_class).parameters:
            raise ValueError(
                f"The DataModule {class_path} has no `data_config` argument: the CLI links the backbone's input size,"
                " mean/std, interpolation and crop fraction into it. Use one of lit_transfer.data's DataModules or"
                " add a `data_config: dict | None = None` argument (and a `num_classes` attribute) to yours."
            )

    # ---------------------------------------------------------------- trainer
    @override
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        requested_precision = config.get("precision")
        if config.get("logger") in (None, True):
            config["logger"] = _default_loggers(config.get("default_root_dir") or ".")
        has_logger = config.get("logger") not in (False, [])
        checkpointing = config.get("enable_checkpointing") is not False and not config.get("fast_dev_run")
        configured = config.get("callbacks") or []
        configured = [configured] if isinstance(configured, Callback) else list(configured)
        defaults = default_callbacks(self.subcommand, has_logger=has_logger, checkpointing=checkpointing)
        config["callbacks"] = _merge_callbacks(configured + list(callbacks), defaults)
        trainer = super()._instantiate_trainer(config, [])
        _note_precision(requested_precision, trainer)
        return trainer


def _data_attribute(datamodule: Any, name: str) -> Any:
    if not hasattr(datamodule, name):
        raise ValueError(
            f"The DataModule {type(datamodule).__name__} has no `{name}` attribute; the CLI links it into the model"
            f" right after the DataModule's __init__. Set `self.{name}` in __init__ (not in setup())."
        )
    return getattr(datamodule, name)


def _class_names(datamodule: Any) -> list[str] | None:
    names = getattr(datamodule, "class_names", None)
    return [str(n) for n in names] if names is not None else None


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _note_precision(requested: Any, trainer: Trainer) -> None:
    """Tell the user when Lightning silently replaced ``16-mixed`` by ``bf16-mixed`` on CPU."""
    if str(requested) in ("16", "16-mixed") and str(trainer.precision) == "bf16-mixed":
        rank_zero_info(
            f"Note: precision={requested!r} runs as 'bf16-mixed' here: fp16 mixed precision needs a GPU, so on CPU"
            " Lightning uses bfloat16 autocast without a GradScaler."
        )


def main(args: ArgsType = None, **kwargs: Any) -> TransferCLI:
    """Entry point of the ``lit-transfer`` command and ``python -m lit_transfer``.

    Args:
        args: Arguments instead of ``sys.argv[1:]`` (a list of strings or a dict), for programmatic use.
        **kwargs: Passed to :class:`TransferCLI` (e.g. ``run=False``).

    Returns:
        The CLI object (``cli.trainer``, ``cli.model``, ``cli.datamodule``).
    """
    return TransferCLI(args=args, **kwargs)
