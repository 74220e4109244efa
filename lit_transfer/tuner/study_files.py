"""What a search leaves in ``<default_root_dir>/tune/<study>/``, read from the database alone.

``best.yaml`` (the best trial's whole config: ``lit-transfer fit --config best.yaml`` refits it on the training
data), ``trials.csv`` (one row per trial), the plots of Optuna's matplotlib visualisations (``history.png``,
``importances.png``, ``slice.png``, ``contour.png``, ``intermediate.png``) and the one-screen summary. Every
worker rewrites them when it finishes (each file replaced in one step), so the last one to finish leaves the
whole study; ``lit-transfer tune ... --n_trials 0`` writes them again without running a trial.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from lit_transfer.tuner.search import REFUSED

__all__ = ["best_trial", "importances", "summary", "write_study_files"]

_COLUMNS = (
    "number",
    "state",
    "value",
    "seed",
    "started",
    "seconds",
    "pruned_at",
    "retry_of",
    "host",
    "run_dir",
    "overrides",
    REFUSED,
)


def best_trial(study: Study) -> FrozenTrial | None:
    """The best complete trial, or ``None`` when none has completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def importances(study: Study) -> dict[str, float]:
    """Each parameter's importance (Optuna's default fANOVA evaluator); empty when it cannot be computed yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError):  # too few complete trials, a single value per parameter
        return {}


def _row(trial: FrozenTrial, params: Sequence[str]) -> dict[str, Any]:
    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    steps = sorted(trial.intermediate_values)
    history = trial.system_attrs.get("retry_history") or []
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "seed": trial.user_attrs.get("seed"),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "seconds": None if seconds is None else round(seconds, 1),
        "pruned_at": steps[-1] if trial.state == TrialState.PRUNED and steps else None,
        "retry_of": history[0] if history else None,
        "host": trial.user_attrs.get("host"),
        "run_dir": trial.user_attrs.get("run_dir"),
        "overrides": " ".join(trial.user_attrs.get("overrides") or []),
        REFUSED: trial.user_attrs.get(REFUSED),
        **{f"param {name}": trial.params.get(name) for name in params},
    }


def trials_csv(study: Study) -> str:
    """``trials.csv``: one row per trial (state, value, seed, timing, run folder, overrides, refusal, parameters).

    ``refused`` holds the data checks' message for a trial they refused (a failed trial), else nothing.
    """
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(name for trial in trials for name in trial.params))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*_COLUMNS, *(f"param {name}" for name in params)])
    writer.writeheader()
    for trial in trials:
        writer.writerow({k: "" if v is None else v for k, v in _row(trial, params).items()})
    return out.getvalue()


def _replace(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` in one step (a reader never sees half a file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def _plots(study: Study, out_dir: Path, ranked: list[str]) -> list[Path]:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    plots: list[tuple[str, Callable[[], Any]]] = [("history.png", lambda: views.plot_optimization_history(study))]
    if len(ranked) >= 1:
        plots.append(("slice.png", lambda: views.plot_slice(study, params=ranked[:3])))
    if len(ranked) >= 2:
        plots.append(("contour.png", lambda: views.plot_contour(study, params=ranked[:2])))
    plots.append(("importances.png", lambda: views.plot_param_importances(study)))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(("intermediate.png", lambda: views.plot_intermediate_values(study)))
    written = []
    for name, draw in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on every matplotlib view
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances before two complete trials with different values
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = out_dir / name
        partial = path.with_name(f".{name}.{os.getpid()}.tmp.png")
        figure.savefig(partial, dpi=100, bbox_inches="tight")
        os.replace(partial, path)
        plt.close(figure)
        written.append(path)
    return written


def write_study_files(study: Study, out_dir: Path, best_config: Callable[[FrozenTrial], str]) -> list[Path]:
    """Write ``best.yaml``, ``trials.csv`` and the plots into ``out_dir``.

    Args:
        study: The study (read from its database).
        out_dir: ``<default_root_dir>/tune/<study>``.
        best_config: The YAML config of a trial (its overrides applied to the user's configs).

    Returns:
        The files written (no ``best.yaml`` and fewer plots before a trial has completed).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_replace(out_dir / "trials.csv", trials_csv(study))]
    best = best_trial(study)
    if best is not None:
        written.append(_replace(out_dir / "best.yaml", best_config(best)))
        ranked = sorted(importances(study).items(), key=lambda kv: -kv[1])
        names = [name for name, _ in ranked] or list(best.params)
        written += _plots(study, out_dir, names)
    return written


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def summary(study: Study, files: Sequence[Path], refit: str) -> str:
    """The one-screen summary printed at the end: counts, the best trial, the top parameters, the files."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    metric = study.user_attrs.get("metric", "value")
    folds = int(study.user_attrs.get("folds") or 0)
    scored = f"{metric}, mean over {folds} folds" if folds else str(metric)
    lines = [
        f"Study {study.study_name!r}: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete,"
        f" {counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed,"
        f" {counts[TrialState.RUNNING]} running, {counts[TrialState.WAITING]} waiting); scored by {scored}"
        f" ({study.direction.name.lower()})"
    ]
    refused = [t for t in trials if t.state == TrialState.FAIL and REFUSED in t.user_attrs]
    if refused:
        numbers = ", ".join(f"#{t.number}" for t in refused)
        lines.append(f"Refused by the data checks (failed): {numbers}; the last: {refused[-1].user_attrs[REFUSED]}")
    best = best_trial(study)
    if best is None:
        lines.append("No trial has completed yet.")
    else:
        lines.append(f"Best: trial {best.number}, {metric} = {_number(best.value)}, seed {best.user_attrs.get('seed')}")
        weights = importances(study)
        for name, value in best.params.items():
            weight = f"  (importance {weights[name]:.2f})" if name in weights else ""
            lines.append(f"  {name} = {value!r}{weight}")
        ranked = sorted(
            (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
            key=lambda t: float(t.value or 0.0),
            reverse=study.direction.name == "MAXIMIZE",
        )
        lines.append("Top trials: " + ", ".join(f"#{t.number} {_number(t.value)}" for t in ranked[:5]))
    lines += ["Files:", *(f"  {path}" for path in files)]
    if best is not None:
        lines.append(f"Refit the best on the training data:\n  {refit}")
    return "\n".join(lines)
