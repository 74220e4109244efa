"""``probe_views`` on tasks it was not chosen on: the fifth held-out suite's tasks, with and without the fitted head.

``probe_views: 4`` (:class:`~lit_transfer.callbacks.HeadProbe`: the classifier fitted by L-BFGS to the frozen
backbone's features of 4 augmented views before the first step) was chosen on the quick start's task alone, on its
validation split. This report runs it once on the four tasks of :mod:`benchmarks.heldout_e_tasks` (built for the LR
finder's report, where only the control policy ran at the grid's rates; nothing about ``probe_views`` was looked at
on them): two LP-FT policies of the development table (:func:`benchmarks.shift_tasks.policies`), each without and
with ``probe_views: 4``, everything else the held-out protocol of :mod:`benchmarks.heldout`: sources trained here,
:data:`EPOCHS` epochs, every row's learning rate chosen per task by its mean validation accuracy over three
validation seeds (:data:`benchmarks.heldout_d.SELECT_SEEDS`), then ten test seeds.

Reported per task and pair: test accuracy without and with, and the mean paired difference (with minus without,
same seeds) with its paired standard error. Goals, per pair: with ``probe_views`` at least as accurate on the mean
over the tasks, and never more than :data:`NEAR` point below on a task.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.heldout import EPOCHS, NEAR, QUICK, SHOTS, SOURCE_EPOCHS, WORKERS, fmt_paired, noise_note, paired
from benchmarks.heldout_d import SELECT_SEEDS
from benchmarks.heldout_e_tasks import TASKS
from benchmarks.shift import select_lrs, selection_seeds
from benchmarks.shift_tasks import FALLBACK, fine_tune_all, policies, task_sources

NAME = "heldout_e_probe_views"
SECTION_FILE = "heldout_e_probe_views_section.md"
VIEWS = 4
"""The quick start recipe's ``probe_views``."""
SEEDS = tuple(range(10))
QUICK_TASKS = ("binary", "split2")


def pairs(epochs: int) -> dict[str, str]:
    """The policies compared: each without ``probe_views`` -> the same with it (rows of the development table)."""
    lp_ft = next(name for name in policies(epochs)[0] if name.startswith("LP-FT (unfreeze"))
    return {lp_ft: f"{lp_ft} + probe_views {VIEWS}", FALLBACK: f"{FALLBACK} + probe_views {VIEWS}"}


def table(epochs: int) -> dict[str, dict[str, Any]]:
    """Row name -> ``TransferClassifier`` arguments: each policy of :func:`pairs`, then the same with the probe."""
    fixed = policies(epochs)[0]
    rows = {}
    for plain, probed in pairs(epochs).items():
        rows[plain] = fixed[plain]
        rows[probed] = {**fixed[plain], "probe_views": VIEWS}
    return rows


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Choose every row's learning rate on validation, run the test seeds, compare each pair per task."""
    common.set_threads(1)
    common.quiet()
    tasks = [t for t in TASKS if t.key in QUICK_TASKS] if quick else list(TASKS)
    epochs = QUICK["epochs"] if quick else EPOCHS
    shots = QUICK["shots"][0] if quick else SHOTS[-1]
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    source_epochs = QUICK["source_epochs"] if quick else SOURCE_EPOCHS
    sources = task_sources(tasks, source_epochs)
    weights = {key: str(path) for key, (path, _) in sources.items()}
    rows = table(epochs)
    rows_paired = list(pairs(epochs).items())
    settings: dict[str, Any] = {"epochs": epochs, "limit_eval_batches": QUICK["eval_batches"] if quick else None}
    workers = 1 if quick else WORKERS
    select_seeds = selection_seeds(SELECT_SEEDS, quick)
    chosen, val_scores = select_lrs(rows, weights, select_seeds, quick, workers, tasks=tasks, **settings)

    cells = [(task, seed, name) for task in tasks for seed in seeds for name in rows]
    jobs = [
        {"task": task, "spec": rows[name], "weights": weights[task.key], "shots": shots, "seed": seed}
        | {"lr": chosen[task.key][name], "split": "test", **settings}
        for task, seed, name in cells
    ]
    accuracy: dict[str, dict[str, list[float]]] = {t.key: {name: [] for name in rows} for t in tasks}
    for (task, _, name), (acc, _) in zip(cells, fine_tune_all(jobs, workers, "probe_views test runs")):
        accuracy[task.key][name].append(acc)
    compared = {
        t.key: {plain: paired(accuracy[t.key][probed], accuracy[t.key][plain]) for plain, probed in rows_paired}
        for t in tasks
    }
    over_tasks = {plain: statistics.fmean(compared[t.key][plain][0] for t in tasks) for plain, _ in rows_paired}
    targets = {}
    for plain, _ in rows_paired:
        with_probe = f"held-out E: {plain} with probe_views {VIEWS}"
        targets[f"{with_probe} >= without, mean over the tasks"] = over_tasks[plain] >= 0
        targets[f"{with_probe} within {NEAR:g} point of without on each task"] = all(
            compared[t.key][plain][0] >= -NEAR for t in tasks
        )
    markdown = section(quick, tasks, rows_paired, accuracy, compared, over_tasks, chosen, seeds, shots, epochs)
    verdicts = "; ".join(f"{name}: **{common.verdict(ok)}**" for name, ok in targets.items())
    markdown += f"\n\nGoals: {verdicts}."
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    body = markdown.split("\n", 1)[1].lstrip()  # without its heading: the including page has its own
    (Path(out_dir) / SECTION_FILE).write_text(common.generated_notice(NAME) + body + "\n")
    return {
        "accuracy": accuracy,
        "paired": compared,
        "mean_over_tasks": over_tasks,
        "chosen_lr": chosen,
        "validation": val_scores,
        "sources": {key: meta for key, (_, meta) in sources.items()},
        "config": {
            "epochs": epochs,
            "shots": shots,
            "seeds": list(seeds),
            "select_seeds": list(select_seeds),
            "probe_views": VIEWS,
            "pairs": dict(rows_paired),
        },
        "targets": targets,
        "markdown": markdown,
    }


def section(
    quick: bool,
    tasks: list[Any],
    rows_paired: list[tuple[str, str]],
    accuracy: dict[str, dict[str, list[float]]],
    compared: dict[str, dict[str, tuple[float, float]]],
    over_tasks: dict[str, float],
    chosen: dict[str, dict[str, float]],
    seeds: tuple[int, ...],
    shots: int,
    epochs: int,
) -> str:
    """The markdown section: how it was run, one table row per task and pair (``rows_paired``: each policy without
    ``probe_views`` and the row with it), the noise notes."""
    lines = []
    notes = []
    for t in tasks:
        for plain, probed in rows_paired:
            lines.append(
                [
                    f"{t.key} (`{t.backbone}`)",
                    plain,
                    f"{chosen[t.key][plain]:g} / {chosen[t.key][probed]:g}",
                    common.fmt_pm(accuracy[t.key][plain]),
                    common.fmt_pm(accuracy[t.key][probed]),
                    fmt_paired(compared[t.key][plain]),
                ]
            )
            note = noise_note(
                f"{t.key}, {plain}",
                compared[t.key][plain][1],
                "one seed, so no paired standard error.",
                "of with minus without",
                f", so this comparison is within the noise of its {len(seeds)} seeds.",
            )
            notes += [note] if note else []
    mean_rows = [[plain, f"{over_tasks[plain]:+.1f}"] for plain, _ in rows_paired]
    once = (
        "Quick mode (`--quick`): a smoke test of the code path (1-epoch sources, 2 target epochs, 1 shot per class,"
        " one seed, two tasks, a few evaluation batches); these figures are not the held-out result."
        if quick
        else f"`probe_views: {VIEWS}` was chosen on the quick start's task alone (its validation split); these tasks"
        " were built for the LR finder's fifth report, where only the control policy ran, and nothing about"
        " `probe_views` was looked at on them before this run. It was run once; misses are published as they came."
    )
    return "\n\n".join(
        [
            f"### probe_views on the fifth held-out suite {{#{NAME.replace('_', '-')}}}",
            once,
            f"The fifth held-out suite's tasks at {shots} shot(s) per class, {epochs} epochs, AdamW (weight decay"
            " 0.05), warmup + cosine, label smoothing 0.1, the digit-safe augmentation, sources trained here"
            f" ({QUICK['source_epochs'] if quick else SOURCE_EPOCHS} epochs). Each policy without and with"
            f" `probe_views: {VIEWS}`; every row's learning rate chosen per task by its mean validation accuracy over"
            f" seed(s) {', '.join(map(str, selection_seeds(SELECT_SEEDS, quick)))}. Test accuracy (%) of the final"
            f" weights, mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); with minus without is"
            " the mean paired difference (points, same seeds) ± its paired standard error.",
            common.md_table(
                ["Task", "Policy", "lr without / with", "without", f"with probe_views {VIEWS}", "with minus without"],
                lines,
            ),
            *notes,
            "With minus without, the mean over the tasks (points):",
            common.md_table(["Policy", "mean over tasks"], mean_rows),
            f"Rows: {', '.join(name for pair in rows_paired for name in pair)}. The validation accuracy of every"
            " row at every learning rate is in"
            f" `results.json` (`{NAME}` > `validation`).",
        ]
    )
