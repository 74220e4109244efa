"""The Optuna search behind ``lit-transfer tune``: one study in an RDB, trials that are real fits, k-fold scoring.

:func:`run_search` creates or joins the study (``load_if_exists``: every worker started with the same storage
and study name joins it), and runs trials until ``n_trials`` (of this worker), ``timeout`` or ``max_trials`` (of
the whole study) is reached. A trial draws its values from the space, turns them into command-line overrides and
hands them to ``fit`` (the command line's own path: :mod:`lit_transfer.cli.tune`), once per fold with
``folds``. Its value is the best validation metric of the fit (the mean over the folds' with ``folds``), as
``best.ckpt`` would pick it; every validation is reported to Optuna, so the pruner can stop it early.

Workers: the storage has heartbeats (``heartbeat_interval``, ``grace_period``), so a trial whose worker died is
marked failed by the next worker that starts a trial after the grace period, and queued again once with the same
values (``RetryHeartbeatStaleTrialCallback``). Each trial writes into its own folder ``<out>/trial_<number>``;
nothing but the database is shared.

Seeds: trial ``n`` runs with ``seed_everything = seed + n`` (a retried trial with its original's seed), the
folds are drawn with the seed stored in the study's user attributes at its creation.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
from lightning.pytorch import Callback
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback, Study
from optuna.trial import FrozenTrial, Trial, TrialState

from lit_transfer.errors import DataMismatchError
from lit_transfer.tuner.folds import FoldSplit
from lit_transfer.tuner.reporting import TrialReporter
from lit_transfer.tuner.space import SearchSpace

__all__ = [
    "PRUNERS",
    "REFUSALS_IN_A_ROW",
    "REFUSED",
    "Direction",
    "FitTrial",
    "RefusalsInARow",
    "SearchSettings",
    "make_pruner",
    "open_study",
    "run_search",
]

Direction = Literal["maximize", "minimize"]
Pruner = Literal["median", "hyperband", "successive_halving", "none"]
PRUNERS: tuple[str, ...] = ("median", "hyperband", "successive_halving", "none")
MAX_RETRIES = 1
"""How often a trial whose worker died is queued again (Optuna's retry of heartbeat-stale trials)."""
REFUSED = "refused"
"""The user attribute of a trial whose values the data checks refused: the refusal's message."""
REFUSALS_IN_A_ROW = 5
"""Refused trials in a row after which a worker stops (:class:`RefusalsInARow`)."""

FitTrial = Callable[[list[str], list[Callback]], None]
"""Fits one run from command-line overrides (after the user's) with extra callbacks: :mod:`lit_transfer.cli.tune`."""


@dataclass(frozen=True)
class SearchSettings:
    """What a search needs besides the space and the fit.

    Attributes:
        out_dir: ``<default_root_dir>/tune/<study_name>``: the trials' run folders and the study files.
        storage: The database URL (``sqlite:///...``, ``postgresql://user:pw@host/db``).
        study_name: The study's name in the database.
        metric: The validation metric the trials are scored by.
        direction: Whether higher (``maximize``) or lower is better.
        pruner: ``median``, ``hyperband``, ``successive_halving`` or ``none``.
        n_trials: Trials this worker runs (``None``: until ``timeout`` or ``max_trials``).
        timeout: Seconds after which this worker starts no new trial.
        max_trials: Finished (complete or pruned) trials after which every worker of the study stops.
        folds: K of k-fold scoring on the training split, or ``None`` for the DataModule's validation split.
        seed: Base seed: of the trials' ``seed_everything`` and of the folds.
        sampler_seed: Seed of Optuna's TPE sampler (``None``: unseeded, which several workers want).
        heartbeat_interval: Seconds between a running trial's heartbeats.
        grace_period: Seconds without a heartbeat after which a trial counts as dead.
    """

    out_dir: Path
    storage: str
    study_name: str
    metric: str
    direction: Direction
    pruner: Pruner = "median"
    n_trials: int | None = 20
    timeout: float | None = None
    max_trials: int | None = None
    folds: int | None = None
    seed: int = 0
    sampler_seed: int | None = None
    heartbeat_interval: int = 30
    grace_period: int = 90


def make_pruner(name: str) -> BasePruner:
    """Optuna's pruner of that name, with Optuna's defaults (``none``: never prune)."""
    pruners: dict[str, Callable[[], BasePruner]] = {
        "median": MedianPruner,
        "hyperband": HyperbandPruner,
        "successive_halving": SuccessiveHalvingPruner,
        "none": NopPruner,
    }
    if name not in pruners:
        raise ValueError(f"`--pruner` must be one of {', '.join(PRUNERS)}, got {name!r}.")
    return pruners[name]()


def _storage(settings: SearchSettings) -> RDBStorage:
    url = settings.storage
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers on one file wait for its lock
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )
    except ImportError as err:
        raise ValueError(
            f"`--storage` {_hidden(url)} needs a database driver that is not installed ({err}). For PostgreSQL:"
            " `pip install 'lit-transfer[tune-postgres]'`."
        ) from None
    except Exception as err:  # SQLAlchemy's connection and URL errors
        if type(err).__module__.startswith(("sqlalchemy", "optuna")) or isinstance(err, ValueError):
            raise ValueError(f"`--storage` {_hidden(url)} cannot be opened: {str(err).splitlines()[0]}") from None
        raise


def _hidden(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def open_study(settings: SearchSettings) -> Study:
    """Create the study, or join it when it exists; check it is scored as this worker scores it.

    The study's user attributes record the metric, its direction, the folds and their seed at creation; a worker
    that disagrees is refused, so one study never mixes two scores.

    Raises:
        ValueError: When the storage cannot be opened or the study was created with another metric or folds.
    """
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage(settings)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        direction=settings.direction,
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
        pruner=make_pruner(settings.pruner),
        load_if_exists=True,
    )
    wanted = {"metric": settings.metric, "direction": settings.direction, "folds": settings.folds or 0}
    recorded = study.user_attrs
    if "metric" not in recorded:
        for key, value in {**wanted, "fold_seed": settings.seed}.items():
            study.set_user_attr(key, value)
        recorded = study.user_attrs
    differs = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
    if differs or study.direction.name.lower() != settings.direction:
        details = ", ".join(f"{k} {old!r} (this command: {new!r})" for k, (old, new) in differs.items())
        raise ValueError(
            f"The study {settings.study_name!r} in {_hidden(settings.storage)} was created with"
            f" {details or 'another direction'}. Use the same `--metric` and `--folds` to continue it, or another"
            " `--study_name`."
        )
    return study


def trial_seed(settings: SearchSettings, trial: Trial | FrozenTrial) -> int:
    """``seed + n`` for trial ``n``; a retried trial keeps the seed of the trial it retries."""
    if isinstance(trial, Trial):  # a running trial's system attributes are read from its study
        running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        trial = next(t for t in running if t.number == trial.number)
    history = trial.system_attrs.get("retry_history") or []  # RetryHeartbeatStaleTrialCallback.retry_history
    return settings.seed + int(history[0] if history else trial.number)


class Objective:
    """One trial: its overrides, one fit per fold, its score (see the module docstring)."""

    def __init__(self, space: SearchSpace, settings: SearchSettings, fit: FitTrial, fold_seed: int) -> None:
        self.space = space
        self.settings = settings
        self.fit = fit
        self.fold_seed = fold_seed

    def __call__(self, trial: Trial) -> float:
        settings = self.settings
        flags = self.space.flags(self.space.suggest(trial))
        seed = trial_seed(settings, trial)
        run_dir = settings.out_dir / f"trial_{trial.number}"
        trial.set_user_attr("overrides", flags)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", os.uname().nodename if hasattr(os, "uname") else "")
        folds: Sequence[int | None] = range(settings.folds) if settings.folds else [None]
        scores: list[float] = []
        step = 0
        for fold in folds:
            root = run_dir if fold is None else run_dir / f"fold_{fold}"
            reporter = TrialReporter(trial, settings.metric, settings.direction, first_step=step)
            callbacks: list[Callback] = [reporter]
            if fold is not None:
                callbacks.append(FoldSplit(fold, int(settings.folds or 0), self.fold_seed))
            try:
                self.fit([*flags, f"--seed_everything={seed}", f"--trainer.default_root_dir={root}"], callbacks)
            except DataMismatchError as err:  # the drawn values do not fit the data: this trial fails, not the search
                trial.set_user_attr(REFUSED, str(err))
                raise
            step = reporter.next_step
            where = "" if fold is None else f" of fold {fold}"
            if reporter.pruned:
                raise optuna.TrialPruned(f"Pruned at validation {step - 1}{where}.")
            if reporter.best is None:
                raise ValueError(
                    f"Trial {trial.number}{where} logged no finite `{settings.metric}`: the run has no validation"
                    " split (set `data.val_fraction` above 0, or use `--folds`), or the metric has another name"
                    " (`--metric`)."
                )
            scores.append(reporter.best)
        if settings.folds:
            trial.set_user_attr("fold_scores", scores)
        return math.fsum(scores) / len(scores)


class RefusalsInARow:
    """Optuna callback: stop this worker after ``limit`` trials in a row that the data checks refused.

    A refused trial counts as failed, and failed trials do not count towards ``max_trials``: without this stop, a
    space whose every value misfits the data would draw trials for ever.
    """

    def __init__(self, limit: int = REFUSALS_IN_A_ROW) -> None:
        self.limit = limit
        self.count = 0
        self.last: FrozenTrial | None = None

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        """Count ``trial`` (a refused one adds one, any other resets the count); stop the study at ``limit``."""
        if trial.state == TrialState.FAIL and REFUSED in trial.user_attrs:
            self.count += 1
            self.last = trial
            if self.count >= self.limit:
                study.stop()
        else:
            self.count = 0

    def check(self) -> None:
        """Raise :class:`DataMismatchError` with the last refusal if the search stopped on refusals."""
        if self.count >= self.limit and self.last is not None:
            drawn = " ".join(self.last.user_attrs.get("overrides") or [])
            raise DataMismatchError(
                f"The data checks refused {self.count} trials in a row, so this worker stopped: the space draws values"
                f" that do not fit the data. Narrow the space to values that fit. The last, trial {self.last.number}"
                f" ({drawn}): {self.last.user_attrs[REFUSED]}"
            )


class _RefusalsWithoutTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; a refused trial's message says all (it is one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DataMismatchError):
            record.exc_info = None
        return True


def run_search(study: Study, space: SearchSpace, settings: SearchSettings, fit: FitTrial) -> None:
    """Run this worker's share of the study.

    A trial that diverges (``FloatingPointError``) or whose drawn values the data checks refuse
    (:class:`~lit_transfer.errors.DataMismatchError`, kept as the trial's ``refused`` user attribute) fails and the
    search goes on; after :data:`REFUSALS_IN_A_ROW` refused trials in a row the worker stops with the last refusal.
    Any other error ends the search.

    Args:
        study: The study (:func:`open_study`).
        space: What the trials draw.
        settings: Storage, study, metric, budget, folds, seeds.
        fit: Fits one run from command-line overrides with extra callbacks.

    Raises:
        DataMismatchError: :data:`REFUSALS_IN_A_ROW` trials in a row were refused.
    """
    fold_seed = int(study.user_attrs.get("fold_seed", settings.seed))
    refusals = RefusalsInARow()
    callbacks: list[Callable[[Study, FrozenTrial], None]] = [refusals]
    if settings.max_trials is not None:
        callbacks.append(MaxTrialsCallback(settings.max_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if settings.n_trials != 0 and (settings.max_trials is None or finished < settings.max_trials):
        quiet = _RefusalsWithoutTraceback()
        optuna_log = logging.getLogger("optuna.study._optimize")
        optuna_log.addFilter(quiet)
        try:
            study.optimize(
                Objective(space, settings, fit, fold_seed),
                n_trials=settings.n_trials,
                timeout=settings.timeout,
                callbacks=callbacks,
                catch=(FloatingPointError, DataMismatchError),  # the trial fails; the search goes on
                gc_after_trial=True,
            )
        finally:
            optuna_log.removeFilter(quiet)
        refusals.check()
