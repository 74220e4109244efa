"""``lit-transfer lr-find``: the LR range test on the model, data and trainer a ``fit`` of the same config would build.

The subcommand takes every option ``fit`` takes (``--config`` files, ``--model.*``, ``--data.*``, ``--trainer.*``)
plus the range test's own (:meth:`LRFindCommand.lr_find`). It writes ``loss_vs_lr.png`` and ``loss_vs_lr.csv`` into
``<run>/lr_find/`` (``<default_root_dir>/lightning_logs/version_N/lr_find/``, next to the run's ``config.yaml``; with
``--trainer.logger false``, ``<default_root_dir>/lr_find/``) and prints the suggestion as the command-line override
to paste into ``fit``. ``lr-find`` and ``lr_find`` are the same subcommand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from lit_transfer.tuner.finder import find_lr
from lit_transfer.tuner.suggest import DEFAULT_RULE, Rule

__all__ = ["LR_FIND", "LRFindCommand", "normalise_subcommand", "override_flags", "run_lr_find"]

LR_FIND = "lr_find"
_ALIAS = "lr-find"
_FLAGS = ("-h", "--help", "--version", "--help-all")


class LRFindCommand:
    """Holds the signature of the ``lr_find`` subcommand (LightningCLI reads a subcommand's options from a method)."""

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_steps: int = 100,
        rule: Rule = DEFAULT_RULE,
        cache_features: bool | None = None,
    ) -> None:
        """Run an LR range test of the model's first freezing phase and print the learning rate to use.

        Args:
            model: Built from the config as for ``fit``.
            datamodule: Built from the config as for ``fit``.
            min_lr: Configured (head) learning rate of the first step; every group keeps its ratio to it.
            max_lr: Configured (head) learning rate of the last step.
            num_steps: Optimizer steps of the exponential ramp (the test stops earlier once the loss diverges).
            rule: How the suggestion is read off the curve: valley, steep or minimum (docs/lr-finder.md).
            cache_features: Run the head's steps on features the frozen backbone computed once (default: when the
                first phase trains the head alone); false: every step on images.
        """


def normalise_subcommand(argv: list[str]) -> list[str]:
    """``argv`` with the subcommand ``lr-find`` spelled ``lr_find`` (the name the parser knows).

    Only the subcommand token changes: the first argument that is neither an option nor an option's value (an option
    written without ``=`` takes the next argument). A value (``--trainer.default_root_dir lr-find``) stays as typed.

    Example:
        >>> normalise_subcommand(["lr-find", "--trainer.default_root_dir", "lr-find"])
        ['lr_find', '--trainer.default_root_dir', 'lr-find']
        >>> normalise_subcommand(["--config", "a.yaml", "fit", "--trainer.default_root_dir", "lr-find"])
        ['--config', 'a.yaml', 'fit', '--trainer.default_root_dir', 'lr-find']
    """
    takes_value = False
    for index, arg in enumerate(argv):
        if takes_value:
            takes_value = False
        elif arg.startswith("-"):
            takes_value = "=" not in arg and arg not in _FLAGS
        else:
            return [*argv[:index], LR_FIND, *argv[index + 1 :]] if arg == _ALIAS else argv
    return argv


def override_flags(lr: float, model_config: Any) -> str:
    """The ``fit`` option(s) that set the configured learning rate to ``lr``.

    Args:
        lr: The learning rate.
        model_config: The parsed ``model`` section (to see whether an optimizer is configured).

    Returns:
        ``--model.optimizer.init_args.lr=<lr>``, preceded by the default optimizer's class when none is configured.

    Example:
        >>> override_flags(0.00316, None).split()[-1]
        '--model.optimizer.init_args.lr=0.0032'
    """
    value = f"--model.optimizer.init_args.lr={lr:.2g}"
    init_args = model_config.get("init_args") if isinstance(model_config, Namespace) else None
    if init_args is not None and init_args.get("optimizer") is not None:
        return value
    return f"--model.optimizer=torch.optim.AdamW --model.optimizer.init_args.weight_decay=0.05 {value}"


def run_lr_find(
    trainer: Trainer,
    model_config: Any,
    model: LightningModule,
    datamodule: LightningDataModule | None = None,
    **options: Any,
) -> None:
    """Run the range test in ``trainer``, write its files into the run folder, print the override.

    Raises:
        ValueError: When the curve gives no suggestion (the files are written first, to look at).
    """
    out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "lr_find"
    result = find_lr(model, datamodule, trainer=trainer, out_dir=out_dir, **options)
    if not trainer.is_global_zero:
        return
    print(result.summary(), flush=True)
    print(f"Plot: {result.plot_path}\nCurve: {result.csv_path}", flush=True)
    if result.suggestion is None:
        raise ValueError(
            f"The LR range test gave no suggestion (see {result.plot_path}): the loss did not fall over the range."
            " Widen it (`--min_lr`, `--max_lr`) or raise `--num_steps`."
        )
    print(f"Train with it: add to your fit command\n  {override_flags(result.suggestion, model_config)}", flush=True)
