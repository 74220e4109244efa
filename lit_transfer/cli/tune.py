"""``lit-transfer tune``: an Optuna search over any config key, each trial a real ``fit`` of the same configs.

The subcommand takes every option ``fit`` takes (``--config`` files, ``--model.*``, ``--data.*``,
``--trainer.*``) plus the search's own (:meth:`TuneCommand.tune`). A trial is built exactly as ``lit-transfer fit``
would build it from the user's arguments followed by the trial's overrides (``--model.optimizer.init_args.lr=...``,
``--seed_everything=...``, ``--trainer.default_root_dir=<out>/trial_<n>``): the same class, links, default
callbacks and run folder. The search itself is :mod:`lit_transfer.tuner.search`, its files
:mod:`lit_transfer.tuner.study_files`; the user's view is ``docs/tune.md``.

DDP inside a trial (``--trainer.devices 2``): Lightning starts the other ranks by running the same command again
with ``LOCAL_RANK`` set. Before each fit, rank 0 puts the trial's overrides into ``LIT_TRANSFER_TUNE_TRIAL``; a rank
started with it runs that one fit and exits, and never talks to Optuna. After the fit rank 0 closes the process
group, so the next trial starts its ranks afresh.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from optuna.trial import FrozenTrial

from lit_transfer.cli.arguments import without_options
from lit_transfer.errors import is_int
from lit_transfer.models.base import TransferModule
from lit_transfer.tasks import MONITOR, task_of
from lit_transfer.tuner.folds import FoldSplit
from lit_transfer.tuner.reporting import TrialReporter
from lit_transfer.tuner.search import Direction, Pruner, SearchSettings, open_study, run_search
from lit_transfer.tuner.space import load_space
from lit_transfer.tuner.study_files import summary, write_study_files

__all__ = ["TRIAL_ENV", "TUNE", "TuneCommand", "run_tune"]

TUNE = "tune"
TRIAL_ENV = "LIT_TRANSFER_TUNE_TRIAL"
"""Set by a tuning rank 0 around a trial's fit: the overrides its other DDP ranks run."""
_DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_TRAINING_ARGS = frozenset(
    {
        *("pretrained", "freeze", "train_bn", "layer_decay", "frozen_lr_mult", "drop_rate", "drop_path_rate"),
        *("label_smoothing", "mixup_alpha", "cutmix_alpha", "optimizer", "lr_scheduler", "scheduler_interval"),
        *("warmup_epochs", "compile", "channels_last", "threshold", "tune_threshold", "pos_weight", "loss"),
        *("huber_delta", "ignore_index", "class_weights"),
    }
)
"""Model arguments that set how a model trains, never what it takes or predicts: no data check reads them."""
_LOADING_ARGS = frozenset({"batch_size", "num_workers", "train_transform"})
"""DataModule arguments no data check reads (``train_transform`` only without ``cache_features``)."""
_LOWER_IS_BETTER = re.compile(r"(loss|mae|mse|rmse|error|err)$")


class TuneCommand:
    """Holds the signature of the ``tune`` subcommand (LightningCLI reads a subcommand's options from a method)."""

    def tune(
        self,
        model: LightningModule,
        space: str,
        datamodule: LightningDataModule | None = None,
        n_trials: int | None = 20,
        timeout: float | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        metric: str | None = None,
        direction: Literal["maximize", "minimize"] | None = None,
        pruner: Pruner = "median",
        folds: int | None = None,
        max_trials: int | None = None,
        sampler_seed: int | None = None,
        heartbeat_interval: int = 30,
        grace_period: int = 90,
    ) -> None:
        """Search hyper-parameters with Optuna: each trial a fit of these configs with the trial's values.

        Args:
            model: Built from the config as for ``fit`` (its task gives the default metric).
            space: YAML search space: config keys with ranges or choices (recipes/tune_space.yaml).
            datamodule: Built from the config as for ``fit``.
            n_trials: Trials this command runs (null: until ``timeout`` or ``max_trials``).
            timeout: Seconds after which this command starts no new trial.
            storage: Database URL of the study (default: sqlite in <default_root_dir>/tune/<study_name>/study.db);
                several commands with the same storage and study name share one study.
            study_name: Name of the study (default: the space file's name without extension).
            metric: Validation metric to optimise (default: the task's, val_acc for classification).
            direction: maximize or minimize (default: the metric's: the task's, or minimize for losses and errors).
            pruner: Stops unpromising trials early: median, hyperband, successive_halving or none.
            folds: Score each trial by the mean over K stratified folds of the training split.
            max_trials: Finished trials of the whole study after which every worker stops.
            sampler_seed: Seed of Optuna's TPE sampler (leave unset when several workers share a study).
            heartbeat_interval: Seconds between heartbeats of a running trial (a dead worker's trial is retried).
            grace_period: Seconds without heartbeat after which a trial counts as failed.
        """


def tune_options() -> set[str]:
    """The names of the ``tune`` subcommand's own options (the ones ``fit`` does not take)."""
    return set(inspect.signature(TuneCommand.tune).parameters) - {"self", "model", "datamodule"}


def _fit_args(argv: list[str]) -> list[str]:
    """The user's ``fit`` arguments: ``argv`` after ``tune``, without the search's own options."""
    if TUNE not in argv:
        raise ValueError("`lit-transfer tune` builds its trials from the command line: call it with a list of args.")
    return without_options(argv[argv.index(TUNE) + 1 :], tune_options())


def _outside_the_data_checks(key: str, cache_features: bool) -> bool:
    """Whether searching ``key`` leaves the data checks of a trial (``check_datamodule``) as the base config's.

    Conservative: a key not known to be outside them counts as read.

    Args:
        key: A searched config key, as the command line spells it.
        cache_features: The base config's ``model.cache_features`` (then the training transform is read).

    Example:
        >>> _outside_the_data_checks("model.optimizer.init_args.lr", False)
        True
        >>> _outside_the_data_checks("model.init_args.freeze", False)
        True
        >>> _outside_the_data_checks("trainer.max_epochs", False)
        True
        >>> _outside_the_data_checks("model.img_size", False), _outside_the_data_checks("data.image_size", False)
        (False, False)
        >>> [_outside_the_data_checks("data.train_transform", cache_features) for cache_features in (False, True)]
        [True, False]
    """
    section, _, rest = key.replace(".init_args.", ".").partition(".")
    name = rest.partition(".")[0]
    if section in ("trainer", "seed_everything"):
        return True
    if section == "model":
        return name in _TRAINING_ARGS
    if section == "data":
        return name in _LOADING_ARGS and not (name == "train_transform" and cache_features)
    return False


def _direction(metric: str, direction: str | None, task: str) -> Direction:
    if direction is not None:
        return direction  # type: ignore[return-value]
    known = {name: mode for name, mode in MONITOR.values()}
    mode = MONITOR[task][1] if metric == MONITOR[task][0] else known.get(metric)
    if mode is None and metric.startswith("val_"):
        mode = "min" if _LOWER_IS_BETTER.search(metric) else None
    if mode is None:
        raise ValueError(
            f"Is a higher `--metric {metric}` better? Add `--direction maximize` or `--direction minimize`."
        )
    return "maximize" if mode == "max" else "minimize"


def _settings(root: Path, task: str, options: dict[str, Any], space_path: str) -> SearchSettings:
    study_name = options["study_name"] or Path(space_path).stem
    out_dir = root / "tune" / re.sub(r"[^\w.-]+", "_", study_name)
    metric = options["metric"] or MONITOR.get(task, MONITOR["multiclass"])[0]
    for name in ("n_trials", "max_trials", "folds"):
        value = options[name]
        if value is not None and (value < 0 or (name == "folds" and value < 2)):
            least = 2 if name == "folds" else 0
            raise ValueError(f"`--{name}` must be at least {least} (or null), got {value!r}.")
    if options["timeout"] is not None and options["timeout"] <= 0:
        raise ValueError(f"`--timeout` must be a positive number of seconds (or null), got {options['timeout']!r}.")
    for name in ("heartbeat_interval", "grace_period"):
        if options[name] < 1:
            raise ValueError(f"`--{name}` must be a positive number of seconds, got {options[name]!r}.")
    if options["grace_period"] <= options["heartbeat_interval"]:
        raise ValueError("`--grace_period` must be longer than `--heartbeat_interval`.")
    return SearchSettings(
        out_dir=out_dir,
        storage=options["storage"] or f"sqlite:///{(out_dir / 'study.db').resolve()}",
        study_name=study_name,
        metric=metric,
        direction=_direction(metric, options["direction"], task),
        pruner=options["pruner"],
        n_trials=options["n_trials"],
        timeout=options["timeout"],
        max_trials=options["max_trials"],
        folds=options["folds"],
        seed=options["seed"],
        sampler_seed=options["sampler_seed"],
        heartbeat_interval=options["heartbeat_interval"],
        grace_period=options["grace_period"],
    )


@contextmanager
def _trial_environment(payload: dict[str, Any]) -> Iterator[None]:
    """``LIT_TRANSFER_TUNE_TRIAL`` for the DDP ranks a fit starts; afterwards, no process group and no rank vars."""
    before = {name: os.environ.get(name) for name in (*_DISTRIBUTED_ENV, TRIAL_ENV)}
    os.environ[TRIAL_ENV] = json.dumps(payload)
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _payload(overrides: list[str], callbacks: list[Callback]) -> dict[str, Any]:
    payload: dict[str, Any] = {"overrides": overrides}
    for callback in callbacks:
        if isinstance(callback, TrialReporter):
            payload.update(metric=callback.metric, direction=callback.direction, first_step=callback.first_step)
        if isinstance(callback, FoldSplit):
            payload.update(fold=callback.fold, folds=callback.folds, fold_seed=callback.seed)
    return payload


def _callbacks_of(payload: dict[str, Any]) -> list[Callback]:
    callbacks: list[Callback] = [
        TrialReporter(None, payload["metric"], payload["direction"], first_step=payload.get("first_step", 0))
    ]
    if payload.get("fold") is not None:
        callbacks.append(FoldSplit(payload["fold"], payload["folds"], payload["fold_seed"]))
    return callbacks


def _fit(cli_class: type[LightningCLI], base: list[str], overrides: list[str], callbacks: list[Callback]) -> None:
    """One trial's fit: ``cli_class`` built from the user's arguments and the overrides, as ``fit`` builds it."""
    trial = _build(cli_class, [*base, *overrides])
    trainer = trial.trainer
    if trainer.num_nodes > 1:
        raise ValueError(
            "A trial runs on one machine: `trainer.num_nodes` must be 1. Start one `lit-transfer tune` per machine"
            " with the same `--storage` instead (docs/tune.md)."
        )
    configured = getattr(trainer, "callbacks")  # noqa: B009 (assigned by Lightning's callback connector, undeclared)
    for callback in callbacks:  # the fold split first: its `setup` replaces the datasets before anyone reads them
        if isinstance(callback, FoldSplit):
            configured.insert(0, callback)
        else:
            configured.append(callback)
    trainer.fit(trial.model, datamodule=trial.datamodule)


def _build(cli_class: type[LightningCLI], args: list[str]) -> LightningCLI:
    """``cli_class`` built from ``args`` as ``fit`` builds it: data checks first, then the Trainer."""

    class Trial(cli_class):  # type: ignore[valid-type,misc]
        stage_without_subcommand = "fit"  # TransferCLI's: a refused trial claims no run folder

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # the tune's own argv
        return Trial(args=args, run=False, parser_kwargs={"exit_on_error": False})


def _parsed(cli_class: type[LightningCLI], args: list[str]) -> LightningCLI:
    """``cli_class`` that parses ``args`` as a trial's CLI does (checks included) and builds nothing."""

    class ParseOnly(cli_class):  # type: ignore[valid-type,misc]
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # the tune's own argv
        return ParseOnly(args=args, run=False, parser_kwargs={"exit_on_error": False})


def _best_config(cli_class: type[LightningCLI], base: list[str], settings: SearchSettings, trial: FrozenTrial) -> str:
    """``best.yaml``: the user's configs with the trial's overrides and seed, as one config ``fit`` runs.

    Parsed as a trial is, and dumped as a trial's run saves its ``config.yaml``.
    """
    overrides = [*trial.user_attrs.get("overrides", []), f"--seed_everything={trial.user_attrs.get('seed')}"]
    built = _parsed(cli_class, [*base, *overrides])
    scored = f"mean {settings.metric} over {settings.folds} folds" if settings.folds else settings.metric
    header = (
        f"# best.yaml — trial {trial.number} of the study {settings.study_name!r}: {scored} = {trial.value:.4g}.\n"
        "# Written by `lit-transfer tune`: the configs it was given with the trial's values and seed. Refit with\n"
        f"#   lit-transfer fit --config {settings.out_dir / 'best.yaml'}\n"
        f"# Trial overrides: {' '.join(overrides)}\n"
    )
    return header + built.parser.dump(built.config, skip_none=False)


def run_tune(cli: LightningCLI, model: LightningModule, datamodule: LightningDataModule | None, **options: Any) -> None:
    """Run the search (or, on a DDP rank other than 0, the one fit rank 0 asks for); print the summary.

    Args:
        cli: The running CLI (its class builds the trials; its ``fit`` parser writes ``best.yaml``).
        model: The model the config builds (its task gives the default metric).
        datamodule: The DataModule the config builds.
        **options: The options of :meth:`TuneCommand.tune`.
    """
    base = _fit_args(list(getattr(cli, "_argv", [])))
    cli_class = type(cli)
    payload = os.environ.get(TRIAL_ENV)
    if payload is not None and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        follow = json.loads(payload)
        _fit(cli_class, base, follow["overrides"], _callbacks_of(follow))
        return
    space = load_space(options.pop("space"))
    config = cli.config[TUNE]
    for extreme in space.extremes():  # every key and value parses before the first trial runs
        _parsed(cli_class, [*base, *extreme])
    if datamodule is not None and isinstance(model, TransferModule):
        cached = bool(model.hparams.get("cache_features"))
        if all(_outside_the_data_checks(param.key, cached) for param in space.params):
            # no trial's values can change what the data checks find: refuse before the study and its first trial
            model.check_datamodule(datamodule, "fit")
    seed = config.get("seed_everything")
    options["seed"] = seed if is_int(seed) else 0
    root = Path(config["trainer"]["default_root_dir"] if isinstance(config.get("trainer"), Namespace) else "runs")
    settings = _settings(root, task_of(model), options, space.source)

    def fit(overrides: list[str], callbacks: list[Callback]) -> None:
        with _trial_environment(_payload(overrides, callbacks)):
            _fit(cli_class, base, overrides, callbacks)

    study = open_study(settings)
    try:
        run_search(study, space, settings, fit)
    finally:  # also after an error or Ctrl-C: the files show what the database holds
        files = write_study_files(study, settings.out_dir, lambda t: _best_config(cli_class, base, settings, t))
        refit = f"lit-transfer fit --config {settings.out_dir / 'best.yaml'}"
        print(summary(study, files, refit), flush=True)
