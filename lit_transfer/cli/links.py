"""The CLI's links: what the data and the backbone already know flows into the model and the DataModule.

* ``data.num_classes`` -> ``model.num_classes`` and ``data.class_names`` -> ``model.class_names``, read from the
  DataModule right after its ``__init__``. A ``model.num_classes`` written in a file or on the command line that
  disagrees with the data is an error naming both values and where it was set.
* for a :class:`~lit_transfer.TransferRegressor`: ``data.num_outputs``, ``data.target_names`` and
  ``data.target_stats`` -> the model's arguments of the same names.
* ``data.task`` is checked against the model's task (:func:`lit_transfer.tasks.check_data_task`).
* ``model.backbone`` -> ``data.data_config``: input size, mean/std, interpolation and crop fraction from timm's
  pretrained config of that backbone (no download), or the checkpoint's recorded preprocessing.
"""

from __future__ import annotations

import inspect
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from lit_transfer.backbones import backbone_data_config
from lit_transfer.cli.arguments import where_set
from lit_transfer.cli.messages import import_class
from lit_transfer.models import TransferClassifier
from lit_transfer.tasks import DATA_TASK, check_data_task, model_task, same_target_stats

__all__ = ["DataLinks", "class_names", "data_attribute", "drop_foreign_links"]

_MODEL_DEFAULT_NUM_CLASSES = inspect.signature(TransferClassifier.__init__).parameters["num_classes"].default


class DataLinks(LightningCLI):
    """The link half of :class:`~lit_transfer.cli.TransferCLI`: the ``compute_fn`` of each link, with its checks."""

    _argv: list[str]

    def _data_config(self, backbone: str) -> dict[str, Any]:
        """The preprocessing a checkpoint was trained with (when one is given), else the backbone's timm config."""
        trained = getattr(self, "_trained_data_config", None)
        return dict(trained) if trained else backbone_data_config(backbone)

    def _num_classes(self, datamodule: Any) -> int:
        """``num_classes`` of the DataModule, checked against an explicit ``model.num_classes``."""
        if self._check_task(datamodule) == "regression":
            return 0  # a regressor has no `num_classes`: jsonargparse drops the link
        num_classes = data_attribute(datamodule, "num_classes")
        config = self.config.get(str(self.subcommand), self.config)
        given = config.model.init_args.get("num_classes") if config.get("model") else None
        where = where_set(config.get("config"), self._argv, "num_classes")
        saved = getattr(self, "_checkpoint_hparams", {})
        if where is None and "num_classes" in saved and saved["num_classes"] != num_classes:
            names = saved.get("class_names")
            trained = f"{saved['num_classes']} classes" + (f" {list(names)}" if names else "")
            data_names = class_names(datamodule)
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
        model_class, init_args = self._model_config()
        if model_class is None:
            return str(getattr(datamodule, "task", "multiclass"))
        task = model_task(model_class, init_args)
        check_data_task(task, datamodule, getattr(datamodule, "num_classes", None))
        return DATA_TASK[task]

    def _num_outputs(self, datamodule: Any) -> int | None:
        """A regressor's ``num_outputs``: the DataModule's, checked against the checkpoint's."""
        if self._check_task(datamodule) != "regression":
            return None
        num_outputs = data_attribute(datamodule, "num_outputs")
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
        if "target_stats" in saved and not same_target_stats(saved["target_stats"], stats):
            raise ValueError(
                f"The checkpoint was trained with the target statistics {saved['target_stats']}, but the data"
                f" ({type(datamodule).__name__}) gives {stats}: its predictions would be scaled back wrongly. Pass"
                " the training table and `standardize_targets` the model was trained with (the same `--config` files"
                " and `--data.*` options as for `fit`)."
            )
        return stats


_LINKED = ("num_classes", "class_names", "num_outputs", "target_names", "target_stats")


def drop_foreign_links(model: Any) -> None:
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


def data_attribute(datamodule: Any, name: str) -> Any:
    """``datamodule.<name>``, or a ``ValueError`` saying where a DataModule must set it."""
    if not hasattr(datamodule, name):
        raise ValueError(
            f"The DataModule {type(datamodule).__name__} has no `{name}` attribute; the CLI links it into the model"
            f" right after the DataModule's __init__. Set `self.{name}` in __init__ (not in setup())."
        )
    return getattr(datamodule, name)


def class_names(datamodule: Any) -> list[str] | None:
    """The DataModule's ``class_names`` as strings, or ``None``."""
    names = getattr(datamodule, "class_names", None)
    return [str(n) for n in names] if names is not None else None
