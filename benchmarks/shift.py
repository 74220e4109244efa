"""Two shifts, one choice: which layers to fine-tune on an output-level and on an input-level shift.

Tasks (:mod:`benchmarks.shift_tasks`), both from the embedded 8x8 digits upsampled to 32x32, each from a source
model made by the quick start's source recipe (:func:`benchmarks.common.source_weights`: ``resnet10t`` from random
init, AdamW 3e-3, label smoothing 0.1, digit-safe augmentation, 30 epochs, seed 42, clean scans):

- **output-level shift**: source digits 0-4 -> target digits 5-9 (same pixels statistics, new labels);
- **input-level shift**: source all ten digits -> target all ten digits with inverted intensity (``255 - v``, a
  fixed transform of every scan; the source model never saw a white background).

Each policy fine-tunes the source backbone with a fresh head on k = 1, 5, 10 scans per class for :data:`EPOCHS`
epochs (AdamW, weight decay 0.05, warmup + cosine, label smoothing 0.1, batch min(16, classes x k), the digit-safe
augmentation) and is scored with its final weights on the fixed held-out test scans of the target task (225 for
digits 5-9, 450 for all ten), mean ± std over :data:`SEEDS` (the seed draws the scans, the head, the order and the
augmentation).

What was selected on what: the learning rate alone, from :data:`LR_GRID` (:data:`LINEAR_PROBE_GRID` for the linear
probe), by the mean accuracy on the target task's validation split (the DataModule's stratified validation scans,
disjoint from the training and test scans) at :data:`SELECT_SHOTS` shots over :data:`SELECT_SEEDS` (seeds not used
for the reported runs). Every row gets its own learning rate per task (the best it can do on each task), ``auto``
included: the same tuning budget for every row. The row :data:`AUTO_SHARED` is ``auto`` again with one learning rate
for every task (the best mean over the tasks' validation accuracies, from the same validation runs), as a user who
tunes nothing per task would run it; neither is told which task it is on. The chosen learning rate is then used at
every shot count. The other settings (epochs, weight decay, layer decay 0.7, the unfreezing epochs) are fixed in
advance, not tuned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.shift_tasks import IMAGE_SIZE, LAYER_DECAY, TASKS, ShiftTask, fine_tune_all, policies, task_sources

SOURCE_EPOCHS = 30
EPOCHS = 8
SHOTS = (1, 5, 10)
SEEDS = (0, 1, 2, 3, 4)
SELECT_SHOTS = 10
SELECT_SEEDS = (100,)
LR_GRID = (1e-3, 3e-3, 1e-2)
LINEAR_PROBE_GRID = (3e-3, 1e-2, 3e-2)
WORKERS = 3
"""Processes of one thread each for the runs of the full benchmark (``--quick`` runs them in-process)."""
QUICK: dict[str, Any] = {
    "source_epochs": 2,
    "epochs": 2,
    "shots": (1,),
    "seeds": (0,),
    "select_seeds": (100,),
    "eval_batches": 2,
}
"""``--quick``: a smoke test (2-epoch sources, 2 target epochs, 1 shot, one seed, one learning rate per policy,
2 validation/test batches per run), no thresholds."""
DECISIONS_FILE = "shift_auto_decisions.md"
"""What ``auto`` logged on each task, written beside ``results.md`` (included by the concepts page)."""
GENERATED = common.generated_notice("shift")
AUTO = "auto"
AUTO_SHARED = "auto (one lr for every task)"
"""``auto`` with one learning rate for every task of a suite (the other rows, ``auto`` included, get one per task)."""
FULL = "full fine-tune"
FIRST, LAST = "first group + head", "last group + head"


def lr_grid(policy: str, quick: bool) -> tuple[float, ...]:
    """The learning rates tried for ``policy`` (the middle one alone in quick mode)."""
    grid = LINEAR_PROBE_GRID if policy == "linear probe" else LR_GRID
    return grid[1:2] if quick else grid


def is_fixed(policy: str) -> bool:
    """Whether ``policy`` is a fixed policy (not one of the ``auto`` rows)."""
    return policy not in (AUTO, AUTO_SHARED)


def select_lrs(
    table: dict[str, dict[str, Any]],
    weights: dict[str, str],
    seeds: tuple[int, ...],
    quick: bool,
    workers: int = 1,
    tasks: Sequence[ShiftTask] = TASKS,
    **settings: Any,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[float, list[float]]]]]:
    """Validation accuracy of every (task, policy, lr) at :data:`SELECT_SHOTS` shots; the chosen lr per task/policy.

    ``settings`` (``epochs``, ``limit_eval_batches``) go to every :func:`~benchmarks.shift_tasks.fine_tune` run;
    ``tasks`` are this benchmark's two shifts unless given (``auto``'s one lr is the best mean over ``tasks``).

    Returns:
        ``chosen[task][policy]`` and ``scores[task][policy][lr]`` (validation accuracies over ``seeds``, %).
    """
    shots = 1 if quick else SELECT_SHOTS
    tried = [name for name in table if name != AUTO_SHARED or AUTO not in table]  # it shares auto's runs
    keys = [(task, name, lr) for task in tasks for name in tried for lr in lr_grid(name, quick)]
    jobs = [
        {"task": task, "spec": table[name], "weights": weights[task.key], "shots": shots, "seed": seed, "lr": lr}
        | {"split": "val", **settings}
        for task, name, lr in keys
        for seed in seeds
    ]
    accuracies = iter(acc for acc, _ in fine_tune_all(jobs, workers, "choosing learning rates"))
    scores: dict[str, dict[str, dict[float, list[float]]]] = {t.key: {name: {} for name in table} for t in tasks}
    for task, name, lr in keys:
        scores[task.key][name][lr] = [next(accuracies) for _ in seeds]
    if AUTO_SHARED in table and AUTO in table:
        for task in tasks:
            scores[task.key][AUTO_SHARED] = scores[task.key][AUTO]
    return pick_lrs(scores), scores


def selection_seeds(seeds: tuple[int, ...], quick: bool) -> tuple[int, ...]:
    """The validation seeds a held-out suite chooses its learning rates on: ``seeds``, the first alone in ``--quick``.

    Example:
        >>> selection_seeds((100, 101, 102), quick=False), selection_seeds((100, 101, 102), quick=True)
        ((100, 101, 102), (100,))
    """
    return seeds[:1] if quick else seeds


def pick_lrs(scores: dict[str, dict[str, dict[float, list[float]]]]) -> dict[str, dict[str, float]]:
    """Each row's learning rate per task from ``scores[task][policy][lr]`` (validation accuracies): the best mean on
    that task; for :data:`AUTO_SHARED` the one best mean over all the tasks."""
    chosen: dict[str, dict[str, float]] = {task: {} for task in scores}
    for task, by_policy in scores.items():
        for name, by_lr in by_policy.items():
            if name == AUTO_SHARED:  # one setting for every task: the best mean over the tasks
                chosen[task][name] = max(by_lr, key=lambda lr: sum(mean(s[name][lr]) for s in scores.values()))
            else:
                chosen[task][name] = max(by_lr, key=lambda lr: mean(by_lr[lr]))
    return chosen


def mean(values: list[float]) -> float:
    """Mean of ``values``."""
    return common.mean_std(values)[0]


def surgical_pattern(results: dict[str, dict[str, dict[int, list[float]]]], shots: tuple[int, ...]) -> list[str]:
    """Sentences computed from the results: does first-group tuning win on the input shift and last-group tuning on
    the output shift, and which fixed policy is best on each task at each shot count."""
    lines = []
    fixed = {key: [p for p in by_policy if is_fixed(p)] for key, by_policy in results.items()}
    for task in TASKS:
        best = [max(fixed[task.key], key=lambda p, k=k: mean(results[task.key][p][k])) for k in shots]  # type: ignore[misc]
        cells = ", ".join(f"{k} shot(s): {p} ({mean(results[task.key][p][k]):.1f} %)" for k, p in zip(shots, best))
        lines.append(f"Best fixed policy on the {task.title}: {cells}.")
    have = all(FIRST in results[t.key] and LAST in results[t.key] for t in TASKS)
    if not have:
        lines.append("Surgical pattern: not measured (the first-group and last-group policies did not run).")
        return lines
    k = shots[-1]
    inp, out = results["input"], results["output"]
    first_wins_input = mean(inp[FIRST][k]) > mean(inp[LAST][k])
    last_wins_output = mean(out[LAST][k]) > mean(out[FIRST][k])
    shows = first_wins_input and last_wins_output
    lines.append(
        f"Surgical pattern at {k} shots (Lee et al.: the first block best on an input-level shift, the last layers"
        f" on an output-level shift): input-level shift, first group + head {mean(inp[FIRST][k]):.1f} % vs last"
        f" group + head {mean(inp[LAST][k]):.1f} %; output-level shift, last group + head {mean(out[LAST][k]):.1f} %"
        f" vs first group + head {mean(out[FIRST][k]):.1f} %: the pattern **{'shows' if shows else 'does not show'}**"
        f" here ({'first' if first_wins_input else 'last'} group wins on the input shift,"
        f" {'last' if last_wins_output else 'first'} group wins on the output shift)."
    )
    return lines


def goals(
    results: dict[str, dict[str, dict[int, list[float]]]], k: int
) -> tuple[dict[str, bool], list[str], dict[str, float]]:
    """The three targets at ``k`` shots (all MISS when ``auto`` did not run), their explanation, and the
    per-policy mean over the two tasks."""
    policies_run = [p for p in results[TASKS[0].key] if all(p in results[t.key] for t in TASKS)]
    averaged = {p: sum(mean(results[t.key][p][k]) for t in TASKS) / len(TASKS) for p in policies_run}
    names = {
        "near": f"auto within 1 point of the best fixed policy on each task at {k} shots",
        "full": f"auto >= full fine-tune on both tasks at {k} shots",
        "ahead": f"auto ahead of every fixed policy averaged over the two tasks at {k} shots",
    }
    if AUTO not in averaged:
        return {n: False for n in names.values()}, ["`auto` did not run: every target is a MISS."], averaged
    notes, near, full = [], True, True
    for task in TASKS:
        by = results[task.key]
        best = max((p for p in by if is_fixed(p)), key=lambda p: mean(by[p][k]))
        gap = mean(by[AUTO][k]) - mean(by[best][k])
        vs_full = mean(by[AUTO][k]) - mean(by[FULL][k])
        near, full = near and gap >= -1.0, full and vs_full >= 0.0
        notes.append(
            f"{task.title}: auto {mean(by[AUTO][k]):.1f} %, best fixed {best} {mean(by[best][k]):.1f} %"
            f" ({gap:+.1f} point), full fine-tune {mean(by[FULL][k]):.1f} % ({vs_full:+.1f} point)."
        )
    runner_up = max((p for p in averaged if is_fixed(p)), key=lambda p: averaged[p])
    ahead = averaged[AUTO] > averaged[runner_up]
    notes.append(
        f"Mean over the two tasks: auto {averaged[AUTO]:.1f} %, best fixed {runner_up} {averaged[runner_up]:.1f} %."
    )
    return {names["near"]: near, names["full"]: full, names["ahead"]: ahead}, notes, averaged


def plot(results: dict[str, dict[str, dict[int, list[float]]]], shots: tuple[int, ...], out_dir: str) -> str:
    """Accuracy vs shots per class, one line per policy, one panel per shift (error bars: std over seeds)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.2), dpi=110)
    panels = figure.subplots(1, len(TASKS), sharey=False)
    for axes, task in zip(panels, TASKS):
        for name, by_shots in results[task.key].items():
            means = [mean(by_shots[k]) for k in shots]
            stds = [common.mean_std(by_shots[k])[1] for k in shots]
            style = {"linewidth": 2.5, "color": "black"} if name == AUTO else {}
            axes.errorbar(shots, means, yerr=stds, label=name, marker="o", capsize=3, **style)
        axes.set_title(task.title, fontsize=9)
        axes.set_xlabel("labelled scans per class")
        axes.set_xticks(list(shots))
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize=6.5, loc="lower right")
    return common.save_figure(figure, out_dir, "shift_accuracy_vs_shots.png")


def decisions_markdown(decisions: dict[str, dict[int, str]], tasks: Sequence[Any] = TASKS) -> str:
    """What ``auto`` logged on each of ``tasks`` at each shot count (first seed), as a markdown list."""
    if not any(decisions.values()):
        return "`auto` did not run (`lit_transfer.freezing.AutoFreeze` is not available), so it decided nothing."
    parts = []
    for task in tasks:
        lines = [f"    - {k} shot{'s' if k > 1 else ''}/class: `{line}`" for k, line in decisions[task.key].items()]
        parts.append(f"- {task.title}:\n" + "\n".join(lines))
    return "\n".join(parts)


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Select each policy's learning rate on validation, then every task x policy x shots x seed on the test split."""
    common.set_threads(1)
    common.quiet()
    source_epochs = QUICK["source_epochs"] if quick else SOURCE_EPOCHS
    epochs = QUICK["epochs"] if quick else EPOCHS
    shots: tuple[int, ...] = QUICK["shots"] if quick else SHOTS
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    select_seeds: tuple[int, ...] = QUICK["select_seeds"] if quick else SELECT_SEEDS
    sources = task_sources(TASKS, source_epochs)
    weights = {key: str(path) for key, (path, _) in sources.items()}
    table, missing = policies(epochs)
    settings: dict[str, Any] = {"epochs": epochs, "limit_eval_batches": QUICK["eval_batches"] if quick else None}
    workers = 1 if quick else WORKERS
    chosen, val_scores = select_lrs(table, weights, select_seeds, quick, workers, **settings)

    results: dict[str, dict[str, dict[int, list[float]]]] = {
        t.key: {p: {k: [] for k in shots} for p in table} for t in TASKS
    }
    decisions: dict[str, dict[int, str]] = {t.key: {} for t in TASKS}
    cells = [(task, seed, k, name) for task in TASKS for seed in seeds for k in shots for name in table]
    jobs = [
        {"task": task, "spec": table[name], "weights": weights[task.key], "shots": k, "seed": seed}
        | {"lr": chosen[task.key][name], "split": "test", **settings}
        for task, seed, k, name in cells
    ]
    # is the inversion an input-level shift? the same probe on the clean scans of the same ten digits
    clean = ShiftTask("clean", "all ten digits, clean", tuple(range(10)), tuple(range(10)), False)
    probe = {"task": clean, "spec": table["linear probe"], "weights": weights["input"], "shots": shots[-1]}
    probe |= {"lr": chosen["input"]["linear probe"], "split": "test", **settings}
    jobs += [{**probe, "seed": seed} for seed in seeds]
    outcomes = fine_tune_all(jobs, workers, "test runs")
    for (task, seed, k, name), (acc, lines) in zip(cells, outcomes):
        results[task.key][name][k].append(acc)
        if name == AUTO and seed == seeds[0]:
            said = [line for line in lines if line.startswith("AutoFreeze")]
            decisions[task.key][k] = said[0] if said else "(no AutoFreeze decision logged)"
    clean_probe = [acc for acc, _ in outcomes[len(cells) :]]
    k = shots[-1]
    targets, notes, averaged = goals(results, k)
    pattern = surgical_pattern(results, shots)
    image = plot(results, shots, out_dir)
    decision_text = decisions_markdown(decisions)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / DECISIONS_FILE).write_text(GENERATED + decision_text + "\n")

    rows = []
    for name in table:
        rows.append(
            [name, *(common.fmt_pm(results[t.key][name][s]) for t in TASKS for s in shots), f"{averaged[name]:.1f}"]
        )
    for name, why in missing.items():
        rows.append([f"{name} (not run: {why})", *("—" for _ in TASKS for _ in shots), "—"])
    headers = [
        "Policy",
        *(f"{t.key} {s} shot{'s' if s > 1 else ''}" for t in TASKS for s in shots),
        f"mean of tasks ({k} shots)",
    ]
    lr_rows = [
        [
            name,
            *(f"{chosen[t.key][name]:g}" for t in TASKS),
            *(" / ".join(f"{lr:g}: {mean(v):.1f}" for lr, v in val_scores[t.key][name].items()) for t in TASKS),
        ]
        for name in table
    ]
    source_acc = {t.key: sources[t.key][1]["source_test_acc"] for t in TASKS}
    verdicts = "; ".join(f"{name}: **{common.verdict(ok)}**" for name, ok in targets.items())
    markdown = "\n\n".join(
        [
            "### Two shifts: what to fine-tune {#shift}",
            f"Sources: the quick start's source recipe (`{common.BACKBONE}` from random init, {source_epochs} epochs on"
            f" clean {IMAGE_SIZE}x{IMAGE_SIZE} scans) on digits 0-4 (source test accuracy {source_acc['output']:.1f} %)"
            f" and on all ten digits ({source_acc['input']:.1f} %). Output-level shift: digits 0-4 -> 5-9."
            " Input-level shift: all ten digits -> all ten digits with inverted intensity (255 - v on every scan)."
            f" Every run: {epochs} epochs, AdamW (weight decay 0.05), warmup + cosine, label smoothing 0.1, batch"
            " min(16, classes x k), the digit-safe affine augmentation; test accuracy (%) of the final weights on the"
            f" fixed held-out test scans, mean ± std over {len(seeds)} seed(s). Layer decay {LAYER_DECAY}: group i"
            " from the head trains at lr x 0.7^i.",
            f"Selected on validation, never on test: each row's learning rate, per task (`{AUTO_SHARED}`: one for"
            f" both tasks), by mean validation accuracy at {1 if quick else SELECT_SHOTS} shots over seeds"
            f" {', '.join(map(str, select_seeds))} (not the reported seeds); the chosen rate is used at every shot"
            " count. Nothing else was tuned.",
            common.md_table(headers, rows),
            f"Is the inversion an input-level shift? The linear probe on the source model's features at {k} shots:"
            f" {common.fmt_pm(clean_probe)} % on clean scans of the same ten digits vs"
            f" {common.fmt_pm(results['input']['linear probe'][k])} % on the inverted ones.",
            *pattern,
            *notes,
            f"Targets: {verdicts}.",
            f"What `auto` decided (its log line, seed {seeds[0]}):\n\n" + decision_text,
            "Learning rates (chosen per task, and the mean validation accuracy of each rate tried):",
            common.md_table(
                ["Policy", *(f"lr {t.key}" for t in TASKS), *(f"validation {t.key}" for t in TASKS)], lr_rows
            ),
            f"![accuracy vs shots, both shifts]({image})",
        ]
    )
    return {
        "results": results,
        "clean_linear_probe": clean_probe,
        "chosen_lr": chosen,
        "validation": val_scores,
        "auto_decisions": decisions,
        "not_run": missing,
        "mean_over_tasks": averaged,
        "sources": {key: meta for key, (_, meta) in sources.items()},
        "config": {"epochs": epochs, "shots": list(shots), "seeds": list(seeds), "select_seeds": list(select_seeds)},
        "targets": targets,
        "markdown": markdown,
    }
