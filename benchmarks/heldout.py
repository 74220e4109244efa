"""Held-out suite: the freezing policies on tasks and architectures that no rule was tuned on.

Kept apart from the development suite (:mod:`benchmarks.shift`): the tasks (:mod:`benchmarks.heldout_tasks`) use
other shifts (rotated, blurred, low-contrast noisy scans; digits 0-6 -> 7-9; even -> odd digits) and other
backbones (``resnet14t``, ``mobilenetv3_small_100``, ``convnext_atto``). The protocol is the development suite's:
each source model trained here by the quick start's source recipe (:func:`benchmarks.common.source_weights`, 30
epochs, seed 42), every run :func:`benchmarks.shift_tasks.fine_tune` (:data:`EPOCHS` epochs, AdamW, warmup + cosine,
label smoothing 0.1, the digit-safe augmentation), the policies of :func:`benchmarks.shift_tasks.policies` (with the
control row of ``auto``'s fallback), each row's learning rate (``auto``'s included) chosen per task on the validation
split by :func:`benchmarks.shift.select_lrs`, and the row ``auto (one lr for every task)`` with one rate for all tasks.

Reported at :data:`SHOTS` shots per class over the suite's seeds (:attr:`Suite.seeds`, :data:`SEEDS` for this one;
``LIT_TRANSFER_HELDOUT_SEEDS=n`` runs seeds ``0..n-1`` instead): test accuracy per policy, and for ``auto`` against
the best fixed policy and against full fine-tuning the mean paired difference (same seeds) and its paired standard
error, the wall time of ``auto`` against the control row's fine-tune, and what ``auto`` decided
(:data:`DECISIONS_FILE`). The suite is meant to be run once, after the rule is fixed; its section says so and
publishes the misses as they come.

The machinery runs any such suite (:class:`Suite`: its tasks, its files, its heading, its seeds): :data:`SUITE` is
this one, :mod:`benchmarks.heldout_b` a second one built after this one had been seen, :mod:`benchmarks.heldout_c` a
third built after both had been seen.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.heldout_tasks import TASKS, HeldoutTask, timed_fine_tune
from benchmarks.shift import (
    AUTO,
    AUTO_SHARED,
    FULL,
    SELECT_SEEDS,
    SELECT_SHOTS,
    decisions_markdown,
    is_fixed,
    mean,
    select_lrs,
    selection_seeds,
)
from benchmarks.shift_tasks import FALLBACK, fine_tune_all, policies, task_sources

SOURCE_EPOCHS = 30
EPOCHS = 8
SHOTS = (10,)
"""Shots per class of the reported runs (the goals are checked at the last)."""
SEEDS = (0, 1, 2, 3, 4)
SEEDS_ENV = "LIT_TRANSFER_HELDOUT_SEEDS"
"""Environment variable: run seeds ``0..n-1`` in place of :data:`SEEDS` (more seeds where the paired noise is high)."""
WORKERS = 2
"""Processes of one thread each for the runs of the full benchmark (``--quick`` runs them in-process)."""
NEAR, TIME_RATIO = 1.0, 1.5
"""Goals: ``auto`` within ``NEAR`` points of the best fixed policy; its wall time within ``TIME_RATIO`` x the
control row's."""
QUICK: dict[str, Any] = {
    "source_epochs": 1,
    "epochs": 2,
    "shots": (1,),
    "seeds": (0,),
    "eval_batches": 2,
    "policies": ("linear probe", FULL, FALLBACK, AUTO),
}
"""``--quick``: a smoke test (1-epoch sources, 2 target epochs, 1 shot per class, one seed, one learning rate per
policy, 2 validation/test batches per run, the control rows and the linear probe alone), no thresholds."""


@dataclass(frozen=True)
class Suite:
    """One held-out suite: its tasks, the files its run writes and the heading of its section.

    Attributes:
        name: The benchmark's name in :data:`benchmarks.run.BENCHMARKS` (named in the generated files' first line).
        tasks: The suite's tasks.
        section_file: The whole section (tables, goals, decisions), written beside ``results.md``.
        decisions_file: What ``auto`` logged on each task, written beside ``results.md``.
        anchor: The heading's anchor (``{#anchor}``).
        heading: The section's heading text.
        label: The prefix of the goals' names (``held-out: auto within ...``).
        history: What the full run's section says of the suite (when it was built and run, what was tuned on it).
        seeds: The seeds of the full run's reported runs, unless :data:`SEEDS_ENV` names another number of seeds.
        select_seeds: The seeds of the validation runs that choose each row's learning rate (by their mean
            validation accuracy; none of them a reported seed).
    """

    name: str
    tasks: tuple[HeldoutTask, ...]
    section_file: str
    decisions_file: str
    anchor: str
    heading: str
    label: str
    history: str
    seeds: tuple[int, ...] = SEEDS
    select_seeds: tuple[int, ...] = SELECT_SEEDS

    @property
    def generated(self) -> str:
        """The first line of the files the suite writes (a generated-file notice naming the command)."""
        return common.generated_notice(self.name)

    @property
    def reported_seeds(self) -> tuple[int, ...]:
        """The full run's seeds: :attr:`seeds`, or ``0..n-1`` when :data:`SEEDS_ENV` is set to ``n``."""
        return seeds_from_env(self.seeds)


SUITE = Suite(
    name="heldout",
    tasks=TASKS,
    section_file="heldout_section.md",
    decisions_file="heldout_auto_decisions.md",
    anchor="heldout",
    heading="Held-out suite: tasks no rule was tuned on",
    label="held-out",
    history="This suite was run once, after the `auto` rule was fixed; nothing in `auto` or in the benchmark was"
    " tuned on it, and its misses are published as they came.",
)
"""The first held-out suite (:mod:`benchmarks.heldout_tasks`)."""
DECISIONS_FILE = SUITE.decisions_file
"""What ``auto`` logged on each held-out task, written beside ``results.md``."""
SECTION_FILE = SUITE.section_file
"""The whole section (tables, goals, decisions) beside ``results.md``, included by ``docs/concepts/choosing.md``."""
GENERATED = SUITE.generated


def seeds_from_env(default: tuple[int, ...] = SEEDS) -> tuple[int, ...]:
    """The reported seeds: ``0..n-1`` when :data:`SEEDS_ENV` is set to ``n`` (a positive integer), else ``default``."""
    raw = os.environ.get(SEEDS_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SEEDS_ENV} must be a positive number of seeds, got {raw!r}; e.g. {SEEDS_ENV}=10.")
    return tuple(range(int(raw)))


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of the paired differences ``a - b`` (same seeds) and its standard error (NaN with one pair)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), error


def fmt_paired(diff: tuple[float, float]) -> str:
    """``+d ± se`` (just ``+d`` when the standard error is undefined)."""
    return f"{diff[0]:+.1f}" if math.isnan(diff[1]) else f"{diff[0]:+.1f} ± {diff[1]:.1f}"


def compare(
    results: dict[str, dict[str, dict[int, list[float]]]],
    seconds: dict[str, dict[str, list[float]]],
    k: int,
    tasks: Sequence[HeldoutTask] = TASKS,
) -> dict[str, dict[str, Any]]:
    """Per task of ``tasks`` at ``k`` shots: the best fixed policy, ``auto`` minus it and minus full fine-tuning
    (paired mean and standard error), and ``auto``'s wall time over the control row's (ratio per seed)."""
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        by = results[task.key]
        best = max((p for p in by if is_fixed(p)), key=lambda p: mean(by[p][k]))
        ratios = [a / c for a, c in zip(seconds[task.key][AUTO], seconds[task.key][FALLBACK], strict=True)]
        out[task.key] = {
            "best_fixed": best,
            "vs_best": paired(by[AUTO][k], by[best][k]),
            "vs_full": paired(by[AUTO][k], by[FULL][k]),
            "time_ratio": ratios,
        }
    return out


def noise_note(title: str, se: float, unmeasured: str, difference: str, consequence: str) -> str | None:
    """The note on a task whose paired standard error is unknown (one seed) or above the :data:`NEAR` goal.

    Args:
        title: The task.
        se: The paired standard error (points; NaN with one seed).
        unmeasured: What to say with one seed.
        difference: Which difference the error is of (completes "the paired standard error ...").
        consequence: The end of the sentence (what follows for the verdict).

    Returns:
        The note, or ``None`` when the error is within the goal.
    """
    if math.isnan(se):
        return f"{title}: {unmeasured}"
    if se > NEAR:
        return (
            f"**Below the seed noise** on {title}: the paired standard error {difference} is {se:.1f} points, more"
            f" than the {NEAR:g}-point goal{consequence}"
        )
    return None


def goals(
    results: dict[str, dict[str, dict[int, list[float]]]],
    pairs: dict[str, dict[str, Any]],
    k: int,
    suite: Suite = SUITE,
) -> tuple[dict[str, bool], list[str], dict[str, float]]:
    """The held-out goals of ``suite`` at ``k`` shots, sentences on each task (and on the seed noise), and every
    policy's mean over the tasks."""
    tasks, label = suite.tasks, suite.label
    averaged = {p: statistics.fmean(mean(results[t.key][p][k]) for t in tasks) for p in results[tasks[0].key]}
    names = {
        "near": f"{label}: auto within {NEAR:g} point of the best fixed policy on each task at {k} shots",
        "full": f"{label}: auto >= full fine-tune on each task at {k} shots (mean paired difference)",
        "ahead": f"{label}: auto ahead of every fixed policy on the mean over the tasks at {k} shots",
        "time": f"{label}: auto's wall time within {TIME_RATIO:g}x the control row's fine-tune on each task",
    }
    notes: list[str] = []
    for task in tasks:
        pair = pairs[task.key]
        (gap, gap_se), (vs_full, _) = pair["vs_best"], pair["vs_full"]
        ratio = common.fmt_pm(pair["time_ratio"], 2)
        notes.append(
            f"{task.title}: auto {mean(results[task.key][AUTO][k]):.1f} %, best fixed policy {pair['best_fixed']}"
            f" {mean(results[task.key][pair['best_fixed']][k]):.1f} %; auto minus best fixed"
            f" {fmt_paired(pair['vs_best'])} points ({common.verdict(gap >= -NEAR)}), auto minus full fine-tune"
            f" {fmt_paired(pair['vs_full'])} points ({common.verdict(vs_full >= 0.0)}); wall time auto / control"
            f" row {ratio}x ({common.verdict(statistics.fmean(pair['time_ratio']) <= TIME_RATIO)})."
        )
        note = noise_note(
            task.title,
            gap_se,
            "one seed, so no paired standard error: the goals are not tested here.",
            "against the best fixed policy",
            f"; more seeds ({SEEDS_ENV}=n) are needed before this task's verdict means anything.",
        )
        notes += [note] if note else []
    runner_up = max((p for p in averaged if is_fixed(p)), key=lambda p: averaged[p])
    notes.append(
        f"Mean over the {len(tasks)} tasks: auto {averaged[AUTO]:.1f} %, best fixed policy {runner_up}"
        f" {averaged[runner_up]:.1f} %."
    )
    targets = {
        names["near"]: all(pairs[t.key]["vs_best"][0] >= -NEAR for t in tasks),
        names["full"]: all(pairs[t.key]["vs_full"][0] >= 0.0 for t in tasks),
        names["ahead"]: averaged[AUTO] > averaged[runner_up],
        names["time"]: all(statistics.fmean(pairs[t.key]["time_ratio"]) <= TIME_RATIO for t in tasks),
    }
    return targets, notes, averaged


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Select each policy's learning rate on validation, then every task x policy x shots x seed on the test split."""
    return run_suite(SUITE, quick, out_dir)


def run_suite(suite: Suite, quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """:func:`run` for ``suite``: its tasks, written to its files under its heading.

    Args:
        suite: The held-out suite.
        quick: The smoke test of :data:`QUICK` in place of the full run.
        out_dir: The folder of ``results.md``, beside which the suite's section and decisions files are written.

    Returns:
        The figures, the goals' verdicts (``targets``) and the section (``markdown``, with its heading).
    """
    tasks = suite.tasks
    common.set_threads(1)
    common.quiet()
    table, missing = policies(QUICK["epochs"] if quick else EPOCHS)
    if missing:  # every row of the development table is needed: a held-out run without them is no result
        raise RuntimeError(f"the held-out suite needs every policy of the development table; missing: {missing}")
    if quick:
        table = {name: spec for name, spec in table.items() if name in QUICK["policies"]}
    shots: tuple[int, ...] = QUICK["shots"] if quick else SHOTS
    source_epochs = QUICK["source_epochs"] if quick else SOURCE_EPOCHS
    epochs = QUICK["epochs"] if quick else EPOCHS
    seeds = QUICK["seeds"] if quick else suite.reported_seeds
    sources = task_sources(tasks, source_epochs)
    weights = {key: str(path) for key, (path, _) in sources.items()}
    settings: dict[str, Any] = {"epochs": epochs, "limit_eval_batches": QUICK["eval_batches"] if quick else None}
    workers = 1 if quick else WORKERS
    select_seeds = selection_seeds(suite.select_seeds, quick)
    chosen, val_scores = select_lrs(table, weights, select_seeds, quick, workers, tasks=tasks, **settings)

    results: dict[str, dict[str, dict[int, list[float]]]] = {
        t.key: {p: {k: [] for k in shots} for p in table} for t in tasks
    }
    seconds: dict[str, dict[str, list[float]]] = {t.key: {AUTO: [], FALLBACK: []} for t in tasks}
    decisions: dict[str, dict[int, str]] = {t.key: {} for t in tasks}
    # auto and the control row are adjacent, so with two workers they run side by side (comparable timings)
    cells = [(task, seed, k, name) for task in tasks for seed in seeds for k in shots for name in table]
    jobs = [
        {"task": task, "spec": table[name], "weights": weights[task.key], "shots": k, "seed": seed}
        | {"lr": chosen[task.key][name], "split": "test", **settings}
        for task, seed, k, name in cells
    ]
    for (task, seed, k, name), (acc, lines, wall) in zip(
        cells, fine_tune_all(jobs, workers, "held-out test runs", runner=timed_fine_tune)
    ):
        results[task.key][name][k].append(acc)
        if k == shots[-1] and name in seconds[task.key]:
            seconds[task.key][name].append(wall)
        if name == AUTO and seed == seeds[0]:
            said = [line for line in lines if line.startswith("AutoFreeze")]
            decisions[task.key][k] = said[0] if said else "(no AutoFreeze decision logged)"
    k = shots[-1]
    pairs = compare(results, seconds, k, tasks)
    targets, notes, averaged = goals(results, pairs, k, suite)
    decision_text = decisions_markdown(decisions, tasks)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / suite.decisions_file).write_text(suite.generated + decision_text + "\n")
    markdown = section(quick, table, results, pairs, averaged, chosen, val_scores, sources, seeds, shots, notes, suite)
    verdicts = "; ".join(f"{name}: **{common.verdict(ok)}**" for name, ok in targets.items())
    markdown += f"\n\nGoals: {verdicts}."
    markdown += f"\n\nWhat `auto` decided (its log line, seed {seeds[0]}):\n\n" + decision_text
    body = markdown.split("\n", 1)[1].lstrip()  # without its heading: the including page has its own
    (Path(out_dir) / suite.section_file).write_text(suite.generated + body + "\n")
    return {
        "results": results,
        "run_seconds": seconds,  # ("seconds" is the whole benchmark's, set by benchmarks.run)
        "paired": pairs,
        "chosen_lr": chosen,
        "validation": val_scores,
        "auto_decisions": decisions,
        "mean_over_tasks": averaged,
        "sources": {key: meta for key, (_, meta) in sources.items()},
        "config": {"epochs": epochs, "shots": list(shots), "seeds": list(seeds), "select_seeds": list(select_seeds)},
        "targets": targets,
        "markdown": markdown,
    }


def section(
    quick: bool,
    table: dict[str, Any],
    results: dict[str, dict[str, dict[int, list[float]]]],
    pairs: dict[str, dict[str, Any]],
    averaged: dict[str, float],
    chosen: dict[str, dict[str, float]],
    val_scores: dict[str, dict[str, dict[float, list[float]]]],
    sources: dict[str, tuple[Path, dict[str, Any]]],
    seeds: tuple[int, ...],
    shots: tuple[int, ...],
    notes: list[str],
    suite: Suite = SUITE,
) -> str:
    """The markdown section of ``suite``: how it was run, the tasks and sources, the accuracy, paired and timing
    tables."""
    tasks, k = suite.tasks, shots[-1]
    select_seeds = selection_seeds(suite.select_seeds, quick)
    meta = {key: m for key, (_, m) in sources.items()}
    task_rows = [
        [
            t.key,
            t.title,
            t.level,
            " ".join(map(str, t.source_classes)),
            f"{meta[t.key]['source_test_acc']:.1f}",
            f"{meta[t.key]['train_seconds']:.0f}",
        ]
        for t in tasks
    ]
    headers = ["Policy", *(f"{t.key} {s} shot(s)" for t in tasks for s in shots), f"mean of tasks ({k} shots)"]
    rows = [
        [name, *(common.fmt_pm(results[t.key][name][s]) for t in tasks for s in shots), f"{averaged[name]:.1f}"]
        for name in table
    ]
    pair_rows = [
        [
            t.key,
            pairs[t.key]["best_fixed"],
            fmt_paired(pairs[t.key]["vs_best"]),
            fmt_paired(pairs[t.key]["vs_full"]),
            common.fmt_pm(pairs[t.key]["time_ratio"], 2),
        ]
        for t in tasks
    ]
    lr_rows = [[t.key, name, f"{chosen[t.key][name]:g}"] for t in tasks for name in table]
    lr_rows = [
        [*row, " / ".join(f"{lr:g}: {mean(v):.1f}" for lr, v in val_scores[row[0]][row[1]].items())] for row in lr_rows
    ]
    once = (
        "Quick mode (`--quick`): a smoke test of the code path (1-epoch sources, 2 target epochs, one seed, a few"
        " evaluation batches); these figures are not the held-out result."
        if quick
        else suite.history
    )
    sizes = sorted({t.image_size for t in tasks})
    scans = " or ".join(f"{size}x{size}" for size in sizes) + (" (as the task's title says)" if len(sizes) > 1 else "")
    return "\n\n".join(
        [
            f"### {suite.heading} {{#{suite.anchor}}}",
            once,
            "Tasks (sources trained here by the quick start's source recipe from random init,"
            f" {QUICK['source_epochs'] if quick else SOURCE_EPOCHS} epochs on clean {scans} scans"
            " of the source digits; input-level shifts corrupt every target scan the same way in every split):",
            common.md_table(
                ["Task", "Backbone and shift", "Level", "Source digits", "Source test acc (%)", "Source train (s)"],
                task_rows,
            ),
            f"Every run as in the development suite: {QUICK['epochs'] if quick else EPOCHS} epochs, AdamW (weight"
            " decay 0.05), warmup + cosine, label smoothing 0.1, batch min(16, classes x k), the digit-safe affine"
            f" augmentation; test accuracy (%) of the final weights, mean ± std over {len(seeds)} seed(s)"
            f" ({', '.join(map(str, seeds))}). Learning rates chosen on the validation split at"
            f" {1 if quick else SELECT_SHOTS} shots over seed(s) {', '.join(map(str, select_seeds))} (by their mean"
            " validation accuracy): per task for"
            f" every row, `auto` included (the same budget for every row); `{AUTO_SHARED}` is `auto` with the one"
            " rate best over all the suite's tasks, from the same validation runs. The goals are `auto`'s.",
            common.md_table(headers, rows),
            f"`auto` against the best fixed policy and against full fine-tuning at {k} shots: mean paired difference"
            " (points, same seeds) ± its paired standard error; wall time of `auto` over the control row's fine-tune"
            f" ({FALLBACK}), each end to end (data set-up, fit, test scoring), mean ± std of the per-seed ratios,"
            " each pair run side by side:",
            common.md_table(
                ["Task", "Best fixed policy", "auto minus best fixed", "auto minus full", "time auto / control"],
                pair_rows,
            ),
            *notes,
            "Learning rates (chosen, and the mean validation accuracy of each rate tried):",
            common.md_table(["Task", "Policy", "lr", "validation"], lr_rows),
        ]
    )
