"""The ``lit-transfer`` command line: a LightningCLI with the package's classes, links and defaults.

Subcommands ``fit``, ``validate``, ``test``, ``predict`` and ``lr-find``; several ``--config`` files compose left
to right, so a recipe is a small overlay on ``recipes/defaults.yaml``. The links live in
:mod:`lit_transfer.cli.links`, the checkpoint arguments in :mod:`lit_transfer.cli.checkpoints`, the run folder and the
default callbacks in :mod:`lit_transfer.cli.run_files`; the user's view of all of it is ``docs/getting-started.md``.

Exit status: 0 on success; 2 for a mistake in the command line, a config or the data (the message is the last
thing printed; set ``LIT_TRANSFER_TRACEBACK=1`` for the traceback); 128 + the signal (143, 130) for a run stopped by
SIGTERM or SIGINT (:mod:`lit_transfer.cli.interrupts`); 1 for any other error.

A model and a DataModule that do not fit each other (input size, task, classes) are refused before the Trainer is
built (:meth:`~lit_transfer.models.base.TransferModule.check_datamodule`): a refused run claims no run folder.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
import warnings
from typing import Any, ClassVar

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lit_transfer.cli.checkpoints import CheckpointArguments
from lit_transfer.cli.config_keys import check_config_keys, top_level_keys
from lit_transfer.cli.help import add_version_argument, help_all_requested, tailor_help
from lit_transfer.cli.interrupts import Stopped, StopSignals, register_trainer
from lit_transfer.cli.links import DataLinks, class_names, drop_foreign_links
from lit_transfer.cli.lr_find import LR_FIND, LRFindCommand, normalise_subcommand, run_lr_find
from lit_transfer.cli.messages import import_class, user_error_message
from lit_transfer.cli.recipes import resolve_config_args
from lit_transfer.cli.run_files import (
    EVALUATION_SUBCOMMANDS,
    default_callbacks,
    default_loggers,
    evaluation_dir,
    merge_callbacks,
)
from lit_transfer.cli.spawn_pickling import check_callbacks_reach_workers
from lit_transfer.cli.tune import TUNE, TuneCommand, run_tune
from lit_transfer.files.checkpoint_io import use_atomic_checkpoint_io
from lit_transfer.models import TransferClassifier
from lit_transfer.models.base import TransferModule
from lit_transfer.tasks import task_of

__all__ = ["TransferCLI", "run_command"]

_PACKAGE_MODULES = ("lit_transfer.callbacks", "lit_transfer.data", "lit_transfer.freezing", "lit_transfer.models")
_TIPS = ("💡 Tip", "💡 Tip:")


def _register_package_classes() -> None:
    """Import the package's modules so LightningCLI resolves short class names (``class_path: LayerFreezing``)."""
    for name in _PACKAGE_MODULES:
        importlib.import_module(name)


class _NoAdvertisements(logging.Filter):
    """Drop Lightning's tips about optional cloud packages (litlogger, litmodels) from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIPS)


def _quiet_lightning() -> None:
    """Drop Lightning's advertisements and its own deprecation notices from what a run prints."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning's, not the user's
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisements) for f in logger.filters):
            logger.addFilter(_NoAdvertisements())


class TransferCLI(CheckpointArguments, DataLinks):
    """LightningCLI for the package's models, DataModules, callbacks and policies.

    See the module docstring for the links, defaults and resume semantics. Every argument of
    :class:`~lightning.pytorch.cli.LightningCLI` is accepted; the defaults differ: ``model_class`` is
    :class:`~lit_transfer.models.base.TransferModule` in subclass mode (:class:`TransferClassifier` by default),
    ``datamodule_class`` any DataModule in subclass mode,
    ``auto_configure_optimizers=False`` and ``save_config_kwargs={"overwrite": True}``.

    Attributes:
        stage_without_subcommand: The stage whose data checks run before the Trainer is built when the CLI runs no
            subcommand (``run=False``): ``None`` (the default) runs none; ``lit-transfer tune`` builds each trial
            with ``"fit"``, so that a refused trial claims no run folder.

    Example:
        >>> cli = TransferCLI(args=["--config", "recipes/defaults.yaml"], run=False)  # doctest: +SKIP
    """

    stage_without_subcommand: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _register_package_classes()
        _quiet_lightning()
        kwargs.setdefault("model_class", TransferModule)  # TransferClassifier (the default) or TransferRegressor
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
        parser.link_arguments("data", "model.init_args.class_names", compute_fn=class_names, apply_on="instantiate")
        for key, link in (
            ("num_outputs", self._num_outputs),
            ("target_names", self._target_names),
            ("target_stats", self._target_stats),
        ):  # regressors only: jsonargparse drops a link into an argument the chosen model class does not have
            parser.link_arguments("data", f"model.init_args.{key}", compute_fn=link, apply_on="instantiate")
        parser.link_arguments(
            "model.init_args.backbone", "data.init_args.data_config", compute_fn=self._data_config, apply_on="parse"
        )

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands (Trainer methods), ``lr_find`` and ``tune`` (:mod:`lit_transfer.cli.tune`)."""
        return {**LightningCLI.subcommands(), LR_FIND: {"model", "datamodule"}, TUNE: {"model", "datamodule"}}

    @override
    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        for subcommand in self.subcommands():
            klass = {LR_FIND: LRFindCommand, TUNE: TuneCommand}.get(subcommand, self.trainer_class)
            description = (inspect.getdoc(getattr(klass, subcommand)) or "").split("\n")[0]
            subparser_kwargs = {"description": description, **kwargs.get(subcommand, {})}
            subparser = self._prepare_subcommand_parser(klass, subcommand, **subparser_kwargs)  # type: ignore[arg-type]
            self._subcommand_parsers[subcommand] = subparser
            subcommands.add_subcommand(subcommand, subparser, help=description)

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand == TUNE:
            return run_tune(self, **self._prepare_subcommand_kwargs(subcommand))
        if subcommand != LR_FIND:
            return super()._run_subcommand(subcommand)
        model_config = self.config[subcommand].get("model")
        run_lr_find(self.trainer, model_config, **self._prepare_subcommand_kwargs(subcommand))
        return None

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            parser.set_defaults(weights_only=True)  # checkpoints are never fully unpickled unless asked for
        return parser

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if isinstance(args, dict):  # values, not a command line: nothing was typed, the process's argv is not ours
            self._argv = []
            super().parse_arguments(parser, args)
            return
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        # `lr-find` is `lr_find`; a missing `recipes/NAME.yaml` is the shipped recipe; `--help-all` shows every option
        self._argv, full_help = help_all_requested(resolve_config_args(normalise_subcommand(argv)))
        add_version_argument(parser)
        if full_help or any(arg in ("-h", "--help") for arg in self._argv):
            # only for help: a hidden option is also left out of the config.yaml a run saves
            tailor_help(parser, getattr(self, "_subcommand_parsers", {}), full=full_help)
        if self._argv != argv:
            if isinstance(args, (list, tuple)):
                args = self._argv
            else:
                sys.argv[1:] = self._argv
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError:  # name every unknown key of every --config file, not only the first
            subparsers = getattr(self, "_subcommand_parsers", {})
            subcommand = next((a for a in self._argv if a in subparsers), None)
            check_config_keys(self._argv, top_level_keys(subparsers[subcommand] if subcommand else parser))
            raise

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        drop_foreign_links(self.model)

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        data = config.get("data")
        class_path = data.get("class_path") if isinstance(data, Namespace) else None
        if class_path is None:
            raise ValueError("No DataModule configured: set `data.class_path` (e.g. `DigitsDataModule`) in a config.")
        data_class = import_class(class_path)
        if "data_config" not in inspect.signature(data_class).parameters:
            raise ValueError(
                f"The DataModule {class_path} has no `data_config` argument: the CLI links the backbone's input size,"
                " mean/std, interpolation and crop fraction into it. Use one of lit_transfer.data's DataModules or"
                " add a `data_config: dict | None = None` argument (and a `num_classes` attribute) to yours."
            )

    # ---------------------------------------------------------------- trainer
    @override
    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        stage = _CHECKED_STAGES.get(str(self.subcommand)) if self.subcommand else self.stage_without_subcommand
        model = getattr(self, "model", None)
        if stage is not None and isinstance(model, TransferModule):  # before the Trainer claims a run folder
            model.check_datamodule(getattr(self, "datamodule", None), stage)
        requested_precision = config.get("precision")
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        evaluation = evaluation_dir(self.subcommand, ckpt_path)
        configured = config.get("callbacks") or []
        configured = [configured] if isinstance(configured, Callback) else list(configured)
        check_callbacks_reach_workers(config.get("strategy"), configured + list(callbacks))  # before a run folder
        if self.subcommand == TUNE:
            config["logger"] = False  # `tune` never fits with this Trainer: each trial builds its own run folder
        if config.get("logger") in (None, True):
            config["logger"] = default_loggers(config.get("default_root_dir") or ".", evaluation)
        has_logger = config.get("logger") not in (False, [])
        checkpointing = config.get("enable_checkpointing") is not False and not config.get("fast_dev_run")
        if self.subcommand in EVALUATION_SUBCOMMANDS and not any(isinstance(c, ModelCheckpoint) for c in configured):
            config["enable_checkpointing"] = False  # an evaluation writes no checkpoint
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used")
        task = task_of(self.model) if isinstance(getattr(self, "model", None), TransferModule) else "multiclass"
        defaults = default_callbacks(self.subcommand, has_logger, checkpointing, evaluation, task)
        config["callbacks"] = merge_callbacks(configured + list(callbacks), defaults)
        trainer = super()._instantiate_trainer(config, [])
        _note_precision(requested_precision, trainer)
        use_atomic_checkpoint_io(trainer)  # checkpoints written next to their target, then renamed
        register_trainer(trainer)  # SIGTERM/SIGINT: main exits 128 + signal after what can be saved
        return trainer


_CHECKED_STAGES = {"fit": "fit", LR_FIND: "fit", **{name: name for name in EVALUATION_SUBCOMMANDS}}
"""The subcommands whose model and DataModule are checked against each other before the Trainer exists, by stage."""


def _note_precision(requested: Any, trainer: Trainer) -> None:
    """Tell the user when Lightning silently replaced ``16-mixed`` by ``bf16-mixed`` on CPU."""
    if str(requested) in ("16", "16-mixed") and str(trainer.precision) == "bf16-mixed":
        rank_zero_info(
            f"Note: precision={requested!r} runs as 'bf16-mixed' here: fp16 mixed precision needs a GPU, so on CPU"
            " Lightning uses bfloat16 autocast without a GradScaler."
        )


def run_command(args: ArgsType = None, **kwargs: Any) -> None:
    """Run one Trainer subcommand as :func:`lit_transfer.cli.main` does (its exit statuses, its stop report).

    Args:
        args: Arguments instead of ``sys.argv[1:]`` (a list of strings or a dict).
        **kwargs: Passed to :class:`TransferCLI`.

    Raises:
        SystemExit: With status 2 after printing a user's mistake, ``128 + signal`` after a stop signal.
    """
    argv = sys.argv[1:] if args is None else args
    parser_kwargs = {"exit_on_error": False, **kwargs.pop("parser_kwargs", {})}
    finished = False
    with StopSignals() as stop:
        try:
            TransferCLI(args=args, parser_kwargs=parser_kwargs, **kwargs)
            finished = True  # a signal may still have arrived, after the last batch: the work is complete
        except Exception as err:
            message = user_error_message(err, argv if isinstance(argv, (list, tuple)) else ())
            if stop.received is None and (message is None or os.environ.get("LIT_TRANSFER_TRACEBACK")):
                raise
            sys.stderr.flush()
            print(f"lit-transfer: error (LIT_TRANSFER_TRACEBACK=1 shows where):\n{message or err}", file=sys.stderr)
            if stop.received is None:
                raise SystemExit(2) from None
        except (SystemExit, KeyboardInterrupt, Stopped) as stopped:  # Lightning ends a stopped run with 0 or 1
            if stop.received is None and isinstance(stopped, SIGTERMException):
                stop.received = signal.SIGTERM  # another process got it: SynchronizedStop stopped them all
            if stop.received is None:
                raise
    if stop.received is not None:
        sys.stderr.flush()
        command = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else []
        if stop.trainer is None or stop.trainer.is_global_zero:  # one report for a multi-process run
            print(stop.report(command, finished), file=sys.stderr)
        if not finished:
            raise SystemExit(128 + stop.received)
    return None
