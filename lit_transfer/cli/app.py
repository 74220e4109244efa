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
linear_probe}`` or ``--model.freeze linear_probe``. ``model`` defaults to :class:`TransferClassifier`;
``--model TransferRegressor`` regresses numbers.

Links, so a recipe never repeats what the data or the backbone already know:

* ``data.num_classes`` → ``model.num_classes`` and ``data.class_names`` → ``model.class_names``, read from the
  DataModule right after its ``__init__``. A ``model.num_classes`` written in a file or on the command line that
  disagrees with the data is an error naming both values and where it was set.
* for a :class:`~lit_transfer.TransferRegressor`: ``data.num_outputs``, ``data.target_names`` and
  ``data.target_stats`` → the model's arguments of the same names.
* ``data.task`` is checked against the model: regression data needs a regressor, multi-label data
  ``--model.task multilabel``; a mismatch is an error naming the option to set.
* ``model.backbone`` → ``data.data_config``: input size, mean/std, interpolation and crop fraction from timm's
  pretrained config of that backbone (no download).

The optimizer and scheduler are ``model.optimizer`` / ``model.lr_scheduler`` (class path + init args, no
``params``); :class:`TransferClassifier` builds its named parameter groups itself, so the CLI's automatic
``configure_optimizers`` is off.

Defaults added to every ``fit`` unless the config already has one of the same type (so a recipe's
``trainer.callbacks`` list cannot drop them): two :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (``best.ckpt``
by ``val_acc``, ``val_map`` for multi-label and ``val_mae`` for regression, and ``last.ckpt`` rewritten at the end
of every epoch),
:class:`~lightning.pytorch.callbacks.LearningRateMonitor` (per step), an
:class:`~lit_transfer.callbacks.ExceptionCheckpoint` and the :class:`~lit_transfer.callbacks.RunReport`. Logs go
to ``<default_root_dir>/lightning_logs/version_N/`` with TensorBoard event files and a ``metrics.csv`` side by
side, next to ``checkpoints/`` and the resolved ``config.yaml``.

``validate``, ``test`` and ``predict`` of a checkpoint inside a run (``.../version_N/checkpoints/*.ckpt``) write
into that run, in ``version_N/<subcommand>/``: logs, the test report (``confusion_matrix.png``/``.csv``,
``epochs.csv``) and ``predictions.csv`` (see :class:`~lit_transfer.callbacks.PredictionCSVWriter`). They
preprocess with the input size and normalisation the checkpoint was trained with.

``--ckpt_path last`` and ``--ckpt_path best`` pick the newest run's ``last.ckpt`` / ``best.ckpt`` under
``<default_root_dir>/lightning_logs``; ``fit`` then continues in a new ``version_N`` directory (the earlier
run's files are never overwritten). A ``fit`` without ``--ckpt_path`` always starts afresh. Checkpoints are
loaded with ``weights_only=True`` by default; the package's checkpoints hold plain values only.

Exit status: 0 on success; 2 for a mistake in the command line, a config or the data (the message is the last
thing printed; set ``LIT_TRANSFER_TRACEBACK=1`` for the traceback); 1 for any other error.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.backbones import backbone_data_config
from lit_transfer.cli.lr_find import LR_FIND, LRFindCommand, normalise_subcommand, run_lr_find
from lit_transfer.cli.messages import import_class, user_error_message
from lit_transfer.cli.run_files import (
    EVALUATION_SUBCOMMANDS,
    LOGS_NAME,
    default_callbacks,
    default_loggers,
    evaluation_dir,
    find_last_checkpoint,
    merge_callbacks,
)
from lit_transfer.models import TransferClassifier
from lit_transfer.models.base import TransferModule
from lit_transfer.tasks import task_of

__all__ = ["TransferCLI", "default_callbacks", "find_last_checkpoint", "main"]

_MODEL_DEFAULT_NUM_CLASSES = inspect.signature(TransferClassifier.__init__).parameters["num_classes"].default
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


def _saved_training_facts(ckpt_path: str) -> dict[str, Any]:
    """The hyper-parameters and the recorded preprocessing of a checkpoint (a safe, weights-only load)."""
    checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    return {"hparams": checkpoint.get("hyper_parameters") or {}, "data_config": checkpoint.get("data_config")}


def _command_line_value(argv: list[str], group: str, key: str) -> tuple[str, str | None] | None:
    """The flag ``--<group>.<key>`` (or ``--<group>.init_args.<key>``) given in ``argv`` and its value, if any.

    Returns:
        ``(flag, value)`` for the first such flag (``value`` is ``None`` when nothing follows it), else ``None``.
    """
    for flag in (f"--{group}.{key}", f"--{group}.init_args.{key}"):
        for i, arg in enumerate(argv):
            if arg.startswith(f"{flag}="):
                return flag, arg.split("=", 1)[1]
            if arg == flag:
                return flag, argv[i + 1] if i + 1 < len(argv) else None
    return None


def _where_set(config_files: Iterable[Any], argv: list[str], key: str) -> str | None:
    """Describe where ``model.<key>`` was written: the config file and key, or the command-line flag."""
    given = _command_line_value(argv, "model", key)
    if given is not None:
        return f"command line `{given[0]}`"
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
    """LightningCLI for the package's models, DataModules, callbacks and policies.

    See the module docstring for the links, defaults and resume semantics. Every argument of
    :class:`~lightning.pytorch.cli.LightningCLI` is accepted; the defaults differ: ``model_class`` is
    :class:`~lit_transfer.models.base.TransferModule` in subclass mode (:class:`TransferClassifier` by default),
    ``datamodule_class`` any DataModule in subclass mode,
    ``auto_configure_optimizers=False`` and ``save_config_kwargs={"overwrite": True}``.

    Example:
        >>> cli = TransferCLI(args=["--config", "recipes/defaults.yaml"], run=False)  # doctest: +SKIP
    """

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
        parser.link_arguments("data", "model.init_args.class_names", compute_fn=_class_names, apply_on="instantiate")
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
        """Lightning's subcommands (Trainer methods) and ``lr_find`` (:mod:`lit_transfer.cli.lr_find`)."""
        return {**LightningCLI.subcommands(), LR_FIND: {"model", "datamodule"}}

    @override
    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        for subcommand in self.subcommands():
            klass = LRFindCommand if subcommand == LR_FIND else self.trainer_class
            description = (inspect.getdoc(getattr(klass, subcommand)) or "").split("\n")[0]
            subparser_kwargs = {"description": description, **kwargs.get(subcommand, {})}
            subparser = self._prepare_subcommand_parser(klass, subcommand, **subparser_kwargs)  # type: ignore[arg-type]
            self._subcommand_parsers[subcommand] = subparser
            subcommands.add_subcommand(subcommand, subparser, help=description)

    @override
    def _run_subcommand(self, subcommand: str) -> None:
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
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        self._argv = normalise_subcommand(argv)  # `lr-find` is `lr_find`
        if self._argv != argv:
            if isinstance(args, (list, tuple)):
                args = self._argv
            else:
                sys.argv[1:] = self._argv
        super().parse_arguments(parser, args)

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
        saved = _saved_training_facts(ckpt_path)
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
        flag, given = _command_line_value(self._argv, "model", "backbone") or (None, None)
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
        explicit_size = _command_line_value(self._argv, "data", "image_size") is not None
        if "image_size" in init_args and not explicit_size and height == width:
            init_args.image_size = int(height)

    # ---------------------------------------------------------------- links
    def _data_config(self, backbone: str) -> dict[str, Any]:
        """The preprocessing a checkpoint was trained with (when one is given), else the backbone's timm config."""
        trained = getattr(self, "_trained_data_config", None)
        return dict(trained) if trained else backbone_data_config(backbone)

    def _num_classes(self, datamodule: Any) -> int:
        """``num_classes`` of the DataModule, checked against an explicit ``model.num_classes``."""
        if self._check_task(datamodule) == "regression":
            return 0  # a regressor has no `num_classes`: jsonargparse drops the link
        num_classes = _data_attribute(datamodule, "num_classes")
        config = self.config.get(str(self.subcommand), self.config)
        given = config.model.init_args.get("num_classes") if config.get("model") else None
        where = _where_set(config.get("config"), self._argv, "num_classes")
        saved = getattr(self, "_checkpoint_hparams", {})
        if where is None and "num_classes" in saved and saved["num_classes"] != num_classes:
            names = saved.get("class_names")
            trained = f"{saved['num_classes']} classes" + (f" {list(names)}" if names else "")
            data_names = _class_names(datamodule)
            raise ValueError(
                f"The checkpoint was trained on {trained}, but the data ({type(datamodule).__name__}) has"
                f" {num_classes}" + (f" {data_names}" if data_names else "") + ". Pass the data the model was"
                " trained on: the same `--config` files and `--data.*` options as for `fit`."
            )
        explicit = where is not None or (given is not None and given != _MODEL_DEFAULT_NUM_CLASSES)
        if explicit and given != num_classes:
            raise ValueError(
                f"`model.num_classes` is {given} ({where or 'set in the config'}) but the data"
                f" ({type(datamodule).__name__}) has {num_classes} classes. Remove `num_classes` from the model"
                " config: it is linked from the data."
            )
        return num_classes

    def _model_config(self) -> tuple[type | None, Namespace]:
        """The configured model class (``None`` when unset) and its ``init_args``."""
        config = self.config.get(str(self.subcommand), self.config)
        model = config.get("model")
        class_path = model.get("class_path") if isinstance(model, Namespace) else None
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        return (import_class(class_path) if class_path else None), init_args or Namespace()

    def _check_task(self, datamodule: Any) -> str:
        """The data's task (``"multiclass"``, ``"multilabel"``, ``"regression"``), refused when the model's differs."""
        data_task = str(getattr(datamodule, "task", "multiclass"))
        model_class, init_args = self._model_config()
        if model_class is None:
            return data_task
        num_classes = getattr(datamodule, "num_classes", None)
        check_task(data_task, type(datamodule).__name__, num_classes, model_class, init_args)
        return data_task

    def _num_outputs(self, datamodule: Any) -> int | None:
        """A regressor's ``num_outputs``: the DataModule's, checked against the checkpoint's."""
        if self._check_task(datamodule) != "regression":
            return None
        num_outputs = _data_attribute(datamodule, "num_outputs")
        saved = getattr(self, "_checkpoint_hparams", {}).get("num_outputs")
        if saved is not None and saved != num_outputs:
            raise ValueError(
                f"The checkpoint was trained on {saved} regression target(s), but the data"
                f" ({type(datamodule).__name__}) has {num_outputs}. Pass the data the model was trained on: the same"
                " `--config` files and `--data.*` options as for `fit`."
            )
        return int(num_outputs)

    def _target_names(self, datamodule: Any) -> list[str] | None:
        names = getattr(datamodule, "target_names", None) if self._check_task(datamodule) == "regression" else None
        return [str(n) for n in names] if names is not None else None

    def _target_stats(self, datamodule: Any) -> dict[str, list[float]] | None:
        """A regressor's ``target_stats``: the DataModule's, which must be the checkpoint's (else ``ValueError``)."""
        if self._check_task(datamodule) != "regression":
            return None
        stats = getattr(datamodule, "target_stats", None)
        saved = getattr(self, "_checkpoint_hparams", {})
        if "target_stats" in saved and not _same_stats(saved["target_stats"], stats):
            raise ValueError(
                f"The checkpoint was trained with the target statistics {saved['target_stats']}, but the data"
                f" ({type(datamodule).__name__}) gives {stats}: its predictions would be scaled back wrongly. Pass"
                " the training table and `standardize_targets` the model was trained with (the same `--config` files"
                " and `--data.*` options as for `fit`)."
            )
        return stats

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        _drop_foreign_links(self.model)

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
        requested_precision = config.get("precision")
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        evaluation = evaluation_dir(self.subcommand, ckpt_path)
        if config.get("logger") in (None, True):
            config["logger"] = default_loggers(config.get("default_root_dir") or ".", evaluation)
        has_logger = config.get("logger") not in (False, [])
        checkpointing = config.get("enable_checkpointing") is not False and not config.get("fast_dev_run")
        configured = config.get("callbacks") or []
        configured = [configured] if isinstance(configured, Callback) else list(configured)
        if self.subcommand in EVALUATION_SUBCOMMANDS and not any(isinstance(c, ModelCheckpoint) for c in configured):
            config["enable_checkpointing"] = False  # an evaluation writes no checkpoint
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used")
        task = task_of(self.model) if isinstance(getattr(self, "model", None), TransferModule) else "multiclass"
        defaults = default_callbacks(self.subcommand, has_logger, checkpointing, evaluation, task)
        config["callbacks"] = merge_callbacks(configured + list(callbacks), defaults)
        trainer = super()._instantiate_trainer(config, [])
        _note_precision(requested_precision, trainer)
        return trainer


def check_task(data_task: str, data_name: str, num_classes: Any, model_class: type, init_args: Namespace) -> None:
    """Refuse a model whose task differs from the data's, naming the option that fixes it.

    Args:
        data_task: The DataModule's ``task``.
        data_name: The DataModule's class name, for the message.
        num_classes: The DataModule's class count (a binary model needs 2).
        model_class: The configured model class.
        init_args: Its configured arguments (``task``).

    Raises:
        ValueError: Regression data with a classifier, labels with a regressor, or labels of another kind than the
            classifier's ``task``.
    """
    parameters = inspect.signature(model_class).parameters
    regressor = "num_outputs" in parameters and "num_classes" not in parameters
    model = model_class.__name__
    if data_task == "regression" and not regressor:
        raise ValueError(
            f"The data ({data_name}) holds regression targets, but the model {model} classifies. Pass"
            " `--model TransferRegressor` (or `model: {class_path: TransferRegressor}` in a config)."
        )
    if data_task != "regression" and regressor:
        task = "" if data_task == "multiclass" else f" --model.task {data_task}"
        raise ValueError(
            f"The data ({data_name}) holds {data_task} labels, but the model {model} regresses numbers. Pass"
            f" `--model TransferClassifier{task}`."
        )
    if regressor or "task" not in parameters:
        return
    model_task = init_args.get("task") or parameters["task"].default
    if data_task == "multilabel" and model_task != "multilabel":
        raise ValueError(
            f"The data ({data_name}) gives each image a set of labels (multi-label), but `model.task` is"
            f" {model_task!r}. Set `--model.task multilabel` (or `task: multilabel` under the model's `init_args`)."
        )
    if data_task == "multiclass" and model_task == "multilabel":
        binary = " (or `binary`: it has 2 classes)" if num_classes == 2 else ""
        raise ValueError(
            f"The data ({data_name}) gives each image one class, but `model.task` is 'multilabel'. Set"
            f" `--model.task multiclass`{binary}, or give the data several labels per image (`CSVDataModule` with"
            " `label_delimiter` or `label_columns`)."
        )
    if data_task == "multiclass" and model_task == "binary" and num_classes != 2:
        raise ValueError(
            f"`model.task` is 'binary', which needs data with exactly 2 classes, but the data ({data_name}) has"
            f" {num_classes}. Set `--model.task multiclass`."
        )


_LINKED = ("num_classes", "class_names", "num_outputs", "target_names", "target_stats")


def _drop_foreign_links(model: Any) -> None:
    """Remove the linked values the model's class has no argument for from its hyper-parameters.

    jsonargparse skips a link into an argument the chosen class lacks (a regressor's ``num_classes``), but Lightning
    still records the value in ``hparams``: it would be saved in checkpoints as if the model had it.
    """
    accepted = inspect.signature(type(model)).parameters
    for store in (getattr(model, "hparams", None), getattr(model, "_hparams_initial", None)):
        if store is None:
            continue
        for key in [k for k in _LINKED if k in store and k not in accepted]:
            del store[key]


def _same_stats(saved: Any, given: Any) -> bool:
    """Whether two ``target_stats`` (or ``None``) agree to float32 precision."""
    if not saved or not given:
        return not saved and not given
    pairs = [(a, b) for key in ("mean", "std") for a, b in zip(saved[key], given[key], strict=True)]
    return all(abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a))) for a, b in pairs)


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


def _note_precision(requested: Any, trainer: Trainer) -> None:
    """Tell the user when Lightning silently replaced ``16-mixed`` by ``bf16-mixed`` on CPU."""
    if str(requested) in ("16", "16-mixed") and str(trainer.precision) == "bf16-mixed":
        rank_zero_info(
            f"Note: precision={requested!r} runs as 'bf16-mixed' here: fp16 mixed precision needs a GPU, so on CPU"
            " Lightning uses bfloat16 autocast without a GradScaler."
        )


def main(args: ArgsType = None, **kwargs: Any) -> None:
    """Entry point of the ``lit-transfer`` command and ``python -m lit_transfer``.

    Returns nothing, so the console script exits with status 0 on success. A user's mistake (a parse error, an
    error raised by the package's own checks, a Lightning misconfiguration) ends with its message as the last
    thing printed and exit status 2; any other error propagates with its traceback (status 1).
    ``LIT_TRANSFER_TRACEBACK=1`` shows the traceback of a mistake too.

    For programmatic use, build :class:`TransferCLI` directly: ``cli = TransferCLI(args=[...], run=False)``.

    Args:
        args: Arguments instead of ``sys.argv[1:]`` (a list of strings or a dict).
        **kwargs: Passed to :class:`TransferCLI`.

    Raises:
        SystemExit: With status 2 after printing a user's mistake.
    """
    parser_kwargs = {"exit_on_error": False, **kwargs.pop("parser_kwargs", {})}
    try:
        TransferCLI(args=args, parser_kwargs=parser_kwargs, **kwargs)
    except Exception as err:
        message = user_error_message(err)
        if message is None or os.environ.get("LIT_TRANSFER_TRACEBACK"):
            raise
        sys.stderr.flush()
        print(f"lit-transfer: error (LIT_TRANSFER_TRACEBACK=1 shows where):\n{message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
