"""The LR finder on the held-out suite: its suggestion against the validation-chosen LR grid, on tasks it was not
developed on.

The finder's default rule (valley, smoothing 0.9) and its settings were chosen on the development task of
:mod:`benchmarks.lr_finder`; this benchmark reports them once on the held-out tasks of :mod:`benchmarks.heldout`
(:data:`benchmarks.heldout_tasks.TASKS`: five tasks, three backbone families, each source trained here) with the
held-out suite's machinery and protocol, at :data:`SHOTS` shots per class, the control policy
(:data:`benchmarks.shift_tasks.FALLBACK`: one head-only epoch, then every group with layer decay 0.7) and seeds
:data:`SEEDS`. For each task and seed:

* the finder: :func:`lit_transfer.find_lr` on the freshly built model of that task and seed
  (:func:`benchmarks.shift_tasks.build`), called as :mod:`benchmarks.lr_finder` calls it (its ``MIN_LR``,
  ``MAX_LR``, ``NUM_STEPS``, the default rule; the head-only first phase steps on backbone features computed once,
  the package's default), timed; then one fine-tune at its suggestion, the held-out suite's run
  (:func:`benchmarks.shift_tasks.fit_and_score`: :data:`EPOCHS` epochs, AdamW, warmup + cosine, label smoothing
  0.1, the digit-safe augmentation), scored on the test split;
* the grid: the control policy's learning rate chosen on the validation split exactly as the held-out suite
  chooses it (:func:`benchmarks.shift.select_lrs`: its grid, 10 shots, its select seeds), computed in this run,
  then fine-tuned at the same seeds and scored on the test split.

Goals, as the development benchmark states them: the finder's suggestion within 1 point of the grid's test accuracy
on each task (mean over seeds; the paired difference and its standard error are reported); the finder's wall time
under 10 % of the fit it precedes (the fine-tune at its suggestion; mean of the per-seed ratios) on each task. The
seed count is the held-out suite's five and is not raised: where a paired standard error exceeds 1 point the
section says the accuracy goal is below the seed noise on that task. Every run is in one process
(:data:`WORKERS`), the finder right before its fine-tune, so the two times are taken alike. Nothing here was tuned
on these results.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common, lr_finder
from benchmarks.heldout import NEAR, SEEDS, fmt_paired, noise_note, paired
from benchmarks.heldout_tasks import TASKS, HeldoutTask
from benchmarks.shift import SELECT_SEEDS, SELECT_SHOTS, mean, select_lrs, selection_seeds
from benchmarks.shift_tasks import FALLBACK, build, fine_tune_all, fit_and_score, policies, task_sources

SOURCE_EPOCHS = 30
EPOCHS = 8
SHOTS = 10
WORKERS = 1
"""One process of one thread: the finder and its fine-tune are timed alike, beside whatever else the machine runs."""
TIME_SHARE = 0.10
"""Goals: the suggestion within the held-out suite's ``NEAR`` points of the grid's test accuracy; the finder under
``TIME_SHARE`` of the fit it precedes."""
BUILD_LR = 1e-3
"""The optimizer's LR of the model the finder runs on (the range test replaces it; the model is built anew after)."""
QUICK: dict[str, Any] = {
    "source_epochs": 1,
    "epochs": 2,
    "shots": 1,
    "seeds": (0,),
    "eval_batches": 2,
    "tasks": ("split7", "parity"),
}
"""``--quick``: a smoke test (1-epoch sources, 2 target epochs, 1 shot per class, one seed, two tasks, the middle
grid LR alone, the development benchmark's quick finder steps, 2 validation/test batches per run)."""


@dataclass(frozen=True)
class FinderSuite:
    """The held-out tasks the finder is reported on, and where its section goes.

    Attributes:
        name: The benchmark's name in :data:`benchmarks.run.BENCHMARKS` (named in the section's first line).
        tasks: The held-out suite's tasks.
        seeds: The reported seeds (the suite's).
        quick_tasks: The tasks of ``--quick``.
        section_file: The section without its heading, beside ``results.md``, included by
            ``docs/concepts/choosing.md``.
        anchor: The heading's anchor (``{#anchor}``).
        heading: The section's heading text.
        label: The prefix of the goals' names.
        history: What the full run's section says of the run (what was tuned where, which run it is).
        select_seeds: The seeds of the validation runs that choose the grid's learning rate (the held-out suite's).
    """

    name: str
    tasks: tuple[HeldoutTask, ...]
    seeds: tuple[int, ...]
    quick_tasks: tuple[str, ...]
    section_file: str
    anchor: str
    heading: str
    label: str
    history: str
    select_seeds: tuple[int, ...] = SELECT_SEEDS

    @property
    def generated(self) -> str:
        """The first line of the section file (a generated-file notice naming the command)."""
        return common.generated_notice(self.name)


SUITE = FinderSuite(
    name="heldout_lr_finder",
    tasks=TASKS,
    seeds=SEEDS,
    quick_tasks=QUICK["tasks"],
    section_file="heldout_lr_finder_section.md",
    anchor="heldout-lr-finder",
    heading="LR finder on the held-out suite",
    label="held-out",
    history="The finder's rule and settings were chosen on the development task (`benchmarks/lr_finder.py`); this"
    " is its report on the held-out tasks, nothing tuned on it, misses published as they came. It is the"
    " suite's second run: the first ran the head's steps of MobileNetV3 and ConvNeXt on images, because their"
    " head group holds layers besides the classifier; the range test then learned to cache `forward_features`"
    " for such heads. The rule, its settings and the tasks did not change.",
)
"""The finder on the first held-out suite (:mod:`benchmarks.heldout_tasks`)."""
SECTION_FILE = SUITE.section_file
GENERATED = SUITE.generated


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One seed of one task: the grid's fine-tune at the chosen LR (``job["kind"] == "grid"``), or the finder then
    the fine-tune at its suggestion (``"finder"``); test accuracy (%), fit time (s) and, for the finder, its
    suggestion, wall time and steps."""
    task, spec, weights = job["task"], job["spec"], job["weights"]
    at = {"shots": job["shots"], "seed": job["seed"]}
    fit = {"epochs": job["epochs"], "split": "test", "limit_eval_batches": job["limit_eval_batches"]}
    out: dict[str, Any] = {}
    if job["kind"] == "grid":
        lr = float(job["lr"])
    else:
        model, data = build(task, spec, weights, lr=BUILD_LR, **at)
        seconds, found = lr_finder.timed_range_test(model, data, job["num_steps"])
        out = {"lr": found.suggestion, "finder_seconds": seconds, "steps": len(found.lrs)}
        out["cached_features"] = found.cached_features
        if found.suggestion is None:  # the curve was too short to tell: no fine-tune, a missing accuracy
            return out | {"test_acc": math.nan, "fit_seconds": math.nan}
        lr = found.suggestion
    model, data = build(task, spec, weights, lr=lr, **at)
    accuracy, _, fit_seconds = fit_and_score(model, data, **fit)
    return out | {"test_acc": accuracy, "fit_seconds": fit_seconds}


def summarise(finder: list[dict[str, Any]], grid: list[dict[str, Any]]) -> dict[str, Any]:
    """One task's figures from its per-seed runs: accuracies, the paired difference, the time ratios, the verdicts."""
    finder_acc, grid_acc = [r["test_acc"] for r in finder], [r["test_acc"] for r in grid]
    ratios = [r["finder_seconds"] / r["fit_seconds"] for r in finder]
    diff = paired(finder_acc, grid_acc)
    return {
        "finder_lr": [r["lr"] for r in finder],
        "finder_acc": finder_acc,
        "grid_acc": grid_acc,
        "finder_seconds": [r["finder_seconds"] for r in finder],
        "finder_fit_seconds": [r["fit_seconds"] for r in finder],
        "grid_fit_seconds": [r["fit_seconds"] for r in grid],
        "steps": [r["steps"] for r in finder],
        "cached_features": all(r["cached_features"] for r in finder),
        "paired": diff,
        "time_ratio": ratios,
        "near": math.isfinite(diff[0]) and diff[0] >= -NEAR,
        "fast": all(math.isfinite(r) for r in ratios) and statistics.fmean(ratios) < TIME_SHARE,
    }


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Choose the control policy's LR on validation, then per task and seed the grid's and the finder's fine-tune."""
    return run_suite(SUITE, quick, out_dir)


def run_suite(suite: FinderSuite, quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """:func:`run` on ``suite``'s tasks, written to its section file under its heading."""
    common.set_threads(1)
    common.quiet()
    tasks = [t for t in suite.tasks if t.key in suite.quick_tasks] if quick else list(suite.tasks)
    epochs = QUICK["epochs"] if quick else EPOCHS
    shots = QUICK["shots"] if quick else SHOTS
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else suite.seeds
    num_steps = lr_finder.QUICK["num_steps"] if quick else lr_finder.NUM_STEPS
    source_epochs = QUICK["source_epochs"] if quick else SOURCE_EPOCHS
    sources = task_sources(tasks, source_epochs)
    weights = {key: str(path) for key, (path, _) in sources.items()}
    table = {FALLBACK: policies(epochs)[0][FALLBACK]}
    settings: dict[str, Any] = {"epochs": epochs, "limit_eval_batches": QUICK["eval_batches"] if quick else None}
    select_seeds = selection_seeds(suite.select_seeds, quick)
    chosen, val_scores = select_lrs(table, weights, select_seeds, quick, WORKERS, tasks=tasks, **settings)

    cells = [(task, seed, kind) for task in tasks for seed in seeds for kind in ("grid", "finder")]
    jobs = [
        {"kind": kind, "task": task, "spec": table[FALLBACK], "weights": weights[task.key], "shots": shots}
        | {"seed": seed, "lr": chosen[task.key][FALLBACK] if kind == "grid" else None, "num_steps": num_steps}
        | settings
        for task, seed, kind in cells
    ]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {t.key: {"grid": [], "finder": []} for t in tasks}
    for (task, _, kind), outcome in zip(cells, fine_tune_all(jobs, WORKERS, "LR finder vs grid", runner=run_job)):
        runs[task.key][kind].append(outcome)
    per_task = {t.key: summarise(runs[t.key]["finder"], runs[t.key]["grid"]) for t in tasks}
    targets = {
        f"{suite.label}: the finder's suggestion within {NEAR:g} point of the validation-chosen grid LR on each"
        f" task at {shots} shots": all(per_task[t.key]["near"] for t in tasks),
        f"{suite.label}: finder under {TIME_SHARE:.0%} of the fine-tune it precedes on each task": all(
            per_task[t.key]["fast"] for t in tasks
        ),
    }
    markdown = section(quick, tasks, per_task, chosen, val_scores, seeds, shots, epochs, num_steps, suite)
    verdicts = "; ".join(f"{name}: **{common.verdict(ok)}**" for name, ok in targets.items())
    markdown += f"\n\nGoals: {verdicts}."
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    body = markdown.split("\n", 1)[1].lstrip()  # without its heading: the including page has its own
    (Path(out_dir) / suite.section_file).write_text(suite.generated + body + "\n")
    return {
        "tasks": per_task,
        "runs": runs,
        "grid_lr": {key: by_policy[FALLBACK] for key, by_policy in chosen.items()},
        "validation": {key: by_policy[FALLBACK] for key, by_policy in val_scores.items()},
        "sources": {key: meta for key, (_, meta) in sources.items()},
        "config": {
            "policy": FALLBACK,
            "epochs": epochs,
            "shots": shots,
            "seeds": list(seeds),
            "select_seeds": list(select_seeds),
            "select_shots": 1 if quick else SELECT_SHOTS,
            "min_lr": lr_finder.MIN_LR,
            "max_lr": lr_finder.MAX_LR,
            "num_steps": num_steps,
            "workers": WORKERS,
        },
        "targets": targets,
        "markdown": markdown,
    }


def section(
    quick: bool,
    tasks: list[HeldoutTask],
    per_task: dict[str, dict[str, Any]],
    chosen: dict[str, dict[str, float]],
    val_scores: dict[str, dict[str, dict[float, list[float]]]],
    seeds: tuple[int, ...],
    shots: int,
    epochs: int,
    num_steps: int,
    suite: FinderSuite = SUITE,
) -> str:
    """The markdown section: how it was run, the per-task table, the noise notes and the grid's validation scores."""
    from lit_transfer.tuner.suggest import DEFAULT_RULE, DEFAULT_SMOOTHING

    rows = []
    notes = []
    for t in tasks:
        r = per_task[t.key]
        lrs = [lr for lr in r["finder_lr"] if lr is not None]
        median = f" (median {statistics.median(lrs):.2g})" if len(lrs) > 1 else ""
        rows.append(
            [
                f"{t.key} (`{t.backbone}`)",
                ", ".join("none" if lr is None else f"{lr:.2g}" for lr in r["finder_lr"]) + median,
                f"{chosen[t.key][FALLBACK]:g}",
                common.fmt_pm(r["finder_acc"]),
                common.fmt_pm(r["grid_acc"]),
                fmt_paired(r["paired"]),
                common.fmt_pm([100 * x for x in r["time_ratio"]]),
                f"{common.fmt_pm(r['finder_seconds'], 2)} / {common.fmt_pm(r['finder_fit_seconds'], 1)}",
            ]
        )
        note = noise_note(
            t.key,
            r["paired"][1],
            "one seed (or a missing suggestion), so no paired standard error.",
            "of finder minus grid",
            f", so this task's accuracy verdict is within the noise of its {len(seeds)} seeds (the suite's seeds, not"
            " raised here).",
        )
        notes += [note] if note else []
    cached = [t.key for t in tasks if per_task[t.key]["cached_features"]]
    on_images = [t.key for t in tasks if not per_task[t.key]["cached_features"]]
    parts = []
    if cached:
        parts.append(f"on {', '.join(cached)} the head's steps ran on backbone features computed once")
    if on_images:
        parts.append(
            f"on {', '.join(on_images)} every step ran on images (the first phase trains more than the head on a"
            " frozen backbone, so the package does not cache)"
        )
    where = "; ".join(parts)
    once = (
        "Quick mode (`--quick`): a smoke test of the code path (1-epoch sources, 2 target epochs, 1 shot per class,"
        " one seed, two tasks, a few evaluation batches); these figures are not the held-out result."
        if quick
        else suite.history
    )
    lr_rows = [
        [t.key, " / ".join(f"{lr:g}: {mean(v):.1f}" for lr, v in val_scores[t.key][FALLBACK].items())] for t in tasks
    ]
    return "\n\n".join(
        [
            f"### {suite.heading} {{#{suite.anchor}}}",
            once,
            f"The held-out tasks at {shots} shot(s) per class with the control policy ({FALLBACK}), {epochs} epochs,"
            " AdamW (weight decay 0.05), warmup + cosine, label smoothing 0.1, the digit-safe augmentation, sources"
            f" trained here ({QUICK['source_epochs'] if quick else SOURCE_EPOCHS} epochs). Finder: `find_lr` on the"
            f" freshly built model of each task and seed, {num_steps} steps from {lr_finder.MIN_LR:g} to"
            f" {lr_finder.MAX_LR:g}, the default rule ({DEFAULT_RULE}, smoothing {DEFAULT_SMOOTHING}), the first"
            f" phase only ({where}); then one fine-tune at its suggestion. Grid: the control policy's learning rate"
            " chosen on the"
            f" validation split as the held-out suite chooses it ({1 if quick else SELECT_SHOTS} shots, seed(s)"
            f" {', '.join(map(str, selection_seeds(suite.select_seeds, quick)))}, by their mean"
            " validation accuracy), fine-tuned at the same seeds. Test accuracy (%) of the final"
            f" weights, mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); finder minus grid is the"
            " mean paired difference (points, same seeds) ± its paired standard error; the finder's wall time over"
            " the fit it precedes (the fine-tune at its suggestion), mean ± std of the per-seed ratios; all runs in"
            " one process.",
            common.md_table(
                [
                    "Task",
                    "finder lr per seed",
                    "grid lr",
                    "finder test acc",
                    "grid test acc",
                    "finder minus grid",
                    "finder / fit (%)",
                    "finder s / fit s",
                ],
                rows,
            ),
            *notes,
            "The grid's validation accuracy per learning rate (the chosen one is the best):",
            common.md_table(["Task", "validation"], lr_rows),
        ]
    )
