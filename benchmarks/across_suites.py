"""Every policy suite read together: how far each fixed policy and ``auto`` fall from each task's best.

The development suite (``shift``) and the held-out suites (``heldout``, ``heldout_b``, ``heldout_c``, ``heldout_d``)
each compare the same freezing policies on their own tasks, with every row's learning rate chosen on validation.
One suite alone is four or five tasks; read together they answer what a user who cannot tune per task should
start from, and whether ``auto``'s trials did better than its fallback plan. This benchmark trains nothing: it
reads the suites' latest results (those on the page it writes to, this run's included) and writes
``across_suites_section.md`` (a table, and ``auto`` against its fallback) and a plot of every task's gap
(``across_suites_gaps.png``, on the results page; a page that includes the section shows the plot itself). It has
no goals of its own: the goals are each suite's.

Every suite was run once, after the rule it checked was fixed, but with the protocol of its time (one or three
validation seeds; on the first held-out suite ``auto`` had one learning rate for every task): the section names
these differences, and its comparison of ``auto`` with its fallback takes only the suites where both had a rate
of their own per task.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.heldout import paired
from benchmarks.shift import AUTO, AUTO_SHARED
from benchmarks.shift_tasks import FALLBACK

NAME = "across_suites"
SECTION_FILE = "across_suites_section.md"
PLOT_FILE = "across_suites_gaps.png"
SHOTS = "10"
"""The labelled samples per class every suite ran (the development suite also ran 1 and 5)."""
NEAR = 1.0
"""Points below a task's best fixed policy that still count as matching it (the held-out suites' goal)."""
SELECTED = "the fixed policy best on validation (per task)"
"""The row of what choosing among the fixed policies per task on the validation split gives: on each task, the test
accuracy of the fixed policy whose validation accuracy (at its chosen rate, mean over the suite's validation seeds)
was the highest, as a search over the policies on the same validation runs would have picked."""
NOT_FIXED = (AUTO, AUTO_SHARED, SELECTED)


@dataclass(frozen=True)
class Suite:
    """One policy suite: its benchmark, its name in the section, and whether ``auto`` got a rate per task."""

    benchmark: str
    label: str
    auto_rate_per_task: bool


SUITES = (
    Suite("shift", "development", True),
    Suite("heldout", "held-out 1", False),
    Suite("heldout_b", "held-out 2", True),
    Suite("heldout_c", "held-out 3", True),
    Suite("heldout_d", "held-out 4", True),
)


FINDER_SUITES = (
    ("heldout_lr_finder", "held-out 1"),
    ("heldout_b_lr_finder", "held-out 2"),
    ("heldout_c_lr_finder", "held-out 3"),
    ("heldout_d_lr_finder", "held-out 4"),
    ("heldout_e_lr_finder", "held-out 5"),
)
"""The LR finder's reports on the held-out suites (benchmark, name in the section): its suggestion against a grid's
validation-chosen rate."""


@dataclass(frozen=True)
class Task:
    """One task's test accuracies at :data:`SHOTS` per row (per seed, the same seeds in every row)."""

    suite: Suite
    key: str
    accuracy: dict[str, list[float]]
    decision: str
    selected: str | None = None
    """The fixed policy with the best validation accuracy (its accuracies are also the row :data:`SELECTED`)."""

    @property
    def fixed(self) -> dict[str, float]:
        """Mean accuracy of every fixed policy (the rows other than ``auto``'s and :data:`SELECTED`)."""
        return {row: statistics.fmean(v) for row, v in self.accuracy.items() if row not in NOT_FIXED}

    def gap(self, row: str) -> float:
        """``row``'s mean accuracy minus the best fixed policy's on this task (points)."""
        return statistics.fmean(self.accuracy[row]) - max(self.fixed.values())


def tasks_of(results: dict[str, dict[str, Any]]) -> list[Task]:
    """The tasks of every suite in ``results`` (benchmark name -> its result) that ran :data:`SHOTS`."""
    tasks = []
    for suite in SUITES:
        result = results.get(suite.benchmark, {})
        decisions = result.get("auto_decisions", {})
        for key, rows in result.get("results", {}).items():
            accuracy = {row: list(by_shots[SHOTS]) for row, by_shots in rows.items() if by_shots.get(SHOTS)}
            if not accuracy:
                continue
            selected = best_on_validation(result, key, [row for row in accuracy if row not in NOT_FIXED])
            if selected is not None:
                accuracy[SELECTED] = accuracy[selected]
            tasks.append(Task(suite, key, accuracy, decisions.get(key, {}).get(SHOTS, ""), selected))
    return tasks


def best_on_validation(result: dict[str, Any], task: str, rows: list[str]) -> str | None:
    """Of ``rows``, the one whose validation accuracy at its chosen rate (mean over the validation seeds) is the
    highest on ``task``; ``None`` when the suite's result has no validation accuracy for every one of them."""
    validation, chosen = result.get("validation", {}).get(task, {}), result.get("chosen_lr", {}).get(task, {})
    scores = {}
    for row in rows:
        by_rate = validation.get(row, {})
        at_chosen = [acc for rate, acc in by_rate.items() if row in chosen and math.isclose(float(rate), chosen[row])]
        if not at_chosen:
            return None
        scores[row] = statistics.fmean(at_chosen[0])
    return max(scores, key=lambda row: scores[row]) if scores else None


def chosen_plan(decision: str) -> str:
    """What ``auto``'s log line says it chose, and whether the trials replaced the default plan.

    Example:
        >>> chosen_plan("AutoFreeze: 10 samples/class; no trials; chose all groups (default: the trials would ...")
        'all groups (default, no trials)'
        >>> chosen_plan("AutoFreeze: ...; chose all groups (lowest validation loss): from epoch 1 ...")
        'all groups (the trials kept the default)'
        >>> chosen_plan("AutoFreeze: ...; chose layer4 + head (lowest validation loss, 2.3 se below the default): ...")
        'layer4 + head (trials)'
    """
    if "chose " not in decision:
        return "not recorded"
    plan, _, reason = decision.split("chose ", 1)[1].partition(" (")
    if "no trials" in decision:
        return f"{plan} (default, no trials)"
    if reason.startswith("default") or "below the default" not in reason:
        return f"{plan} (the trials kept the default)"
    return f"{plan} (trials)"


def policy_rows(tasks: list[Task]) -> list[dict[str, Any]]:
    """Per row, over the tasks it ran on: mean gap to each task's best fixed policy, its standard error over the
    tasks, the tasks within :data:`NEAR` point of the best, the tasks where it was at or above the best (for a fixed
    policy: the best), and its worst gap; sorted by the mean gap, best first."""
    names = list(dict.fromkeys(row for task in tasks for row in task.accuracy))
    rows = []
    for name in names:
        on = [task for task in tasks if name in task.accuracy]
        gaps = [task.gap(name) for task in on]
        rows.append(
            {
                "row": name,
                "tasks": len(on),
                "mean_gap": statistics.fmean(gaps),
                "se": _standard_error(gaps),
                "within_near": sum(gap >= -NEAR for gap in gaps),
                "best_on": sum(gap >= 0 for gap in gaps),
                "worst_gap": min(gaps),
            }
        )
    return sorted(rows, key=lambda r: -r["mean_gap"])


def auto_against_fallback(tasks: list[Task]) -> list[dict[str, Any]]:
    """Per task where ``auto`` and its fallback row each had their own rate: paired difference (auto minus fallback)
    over the seeds, its paired standard error, and what ``auto`` chose."""
    compared = []
    for task in tasks:
        if not task.suite.auto_rate_per_task or AUTO not in task.accuracy or FALLBACK not in task.accuracy:
            continue
        diff, se = paired(task.accuracy[AUTO], task.accuracy[FALLBACK])
        compared.append(
            {
                "suite": task.suite.label,
                "task": task.key,
                "diff": diff,
                "se": se,
                "plan": chosen_plan(task.decision),
            }
        )
    return compared


def finder_tasks(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task of every LR finder report in ``results``: its suite, the paired difference (finder minus grid,
    points) and whether each goal held there (``near``: within :data:`NEAR` point; ``fast``: under a tenth of the
    fit it precedes)."""
    rows = []
    for benchmark, label in FINDER_SUITES:
        for key, task in results.get(benchmark, {}).get("tasks", {}).items():
            diff = task["paired"][0]
            rows.append({"suite": label, "task": key, "diff": diff, "near": task["near"], "fast": task["fast"]})
    return rows


def finder_section(rows: list[dict[str, Any]]) -> str:
    """The LR finder's reports read together: per suite and over every task."""
    if not rows:
        return ""
    table = []
    for label in dict.fromkeys(r["suite"] for r in rows):
        mine = [r for r in rows if r["suite"] == label]
        table.append(_finder_row(label, mine))
    table.append(_finder_row("**every held-out suite**", rows))
    return "\n\n".join(
        [
            "The LR finder's reports on the held-out suites, read together: on each task the mean paired difference"
            " between the test accuracy of a fine-tune at the finder's suggestion and one at the rate a grid chose"
            f" on validation (points, finder minus grid), and on how many tasks each goal held (within {NEAR:g} point"
            " of the grid; the whole test under a tenth of the fit it precedes). The mean ± standard error is over"
            " the tasks. The fifth suite ran after the finder's fixed costs were cut, so its times are not those of"
            " the first four.",
            common.md_table(
                ["Suites", "Tasks", "Finder minus grid, mean over the tasks", f"Within {NEAR:g} point", "Under 10 %"],
                table,
            ),
        ]
    )


def _standard_error(values: list[float]) -> float:
    """The standard error of the mean of ``values`` (NaN for one value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def _finder_row(label: str, rows: list[dict[str, Any]]) -> list[Any]:
    diffs = [r["diff"] for r in rows]
    return [
        label,
        len(rows),
        f"{statistics.fmean(diffs):+.1f} ± {common.fmt(_standard_error(diffs), 1)}",
        sum(bool(r["near"]) for r in rows),
        sum(bool(r["fast"]) for r in rows),
    ]


def run(quick: bool, out_dir: str = "docs/benchmarks", earlier: dict[str, dict[str, Any]] | None = None) -> dict:
    """Read the suites' results in ``earlier`` (the page's results, this run's first) and write the section."""
    tasks = tasks_of(earlier or {})
    rows = policy_rows(tasks)
    against = auto_against_fallback(tasks)
    finder = finder_tasks(earlier or {})
    markdown = "\n\n".join(part for part in (section(tasks, rows, against), finder_section(finder)) if part)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    body = markdown.split("\n", 1)[1].lstrip()  # without its heading: the including page has its own, and the plot
    (Path(out_dir) / SECTION_FILE).write_text(common.generated_notice(NAME) + body + "\n")
    if tasks:
        markdown += f"\n\n![Each task's gap to its best fixed policy, per row]({plot(tasks, rows, out_dir)})"
    return {
        "suites": sorted({task.suite.benchmark for task in tasks}),
        "tasks": [f"{task.suite.benchmark}/{task.key}" for task in tasks],
        "policies": rows,
        "auto_against_fallback": against,
        "selected_on_validation": {f"{task.suite.benchmark}/{task.key}": task.selected for task in tasks},
        "lr_finder": finder,
        "targets": {},
        "markdown": markdown,
    }


def section(tasks: list[Task], rows: list[dict[str, Any]], against: list[dict[str, Any]]) -> str:
    """The markdown: what was read, the table over every task, ``auto`` against its fallback."""
    if not tasks:
        return (
            f"### across_suites\n\nNo policy suite's results at {SHOTS} shots are on this page yet: run the suites"
            " first (`--only shift`, and each held-out suite by name)."
        )
    suites = sorted({task.suite for task in tasks}, key=SUITES.index)
    read = ", ".join(f"{s.label} (`{s.benchmark}`: {sum(t.suite == s for t in tasks)} tasks)" for s in suites)
    table = common.md_table(
        [
            "Policy",
            "Tasks",
            "Mean gap to the best (points)",
            f"Within {NEAR:g} point",
            "At or above the best",
            "Worst gap",
        ],
        [
            [
                r["row"],
                r["tasks"],
                f"{r['mean_gap']:+.1f} ± {common.fmt(r['se'], 1)}",
                r["within_near"],
                r["best_on"],
                f"{r['worst_gap']:+.1f}",
            ]
            for r in rows
        ],
    )
    fixed = [r for r in rows if r["row"] not in NOT_FIXED]
    selected = next((r for r in rows if r["row"] == SELECTED), None)
    parts = [
        "### across_suites",
        f"Read together: {read}, {len(tasks)} tasks at {SHOTS} labelled samples per class. Each task's best fixed"
        " policy is the one with the highest mean test accuracy over its seeds; a row's gap on a task is its mean"
        " minus that best (0 where it is the best), and the table gives the mean over the tasks ± its standard error"
        " over the tasks. The best is picked on the same test means it is compared with, so every gap is measured"
        " against a slightly lucky maximum; the suites also differ in their protocol (validation seeds, and on the"
        " first held-out suite `auto` had one rate for every task), which the suites' own sections describe.",
        table,
        f"Smallest mean gap among the fixed policies: **{fixed[0]['row']}** ({fixed[0]['mean_gap']:+.1f} points);"
        f" best on the most tasks: **{max(fixed, key=lambda r: r['best_on'])['row']}**. No fixed policy was the best"
        " on every task."
        if fixed and all(r["best_on"] < len(tasks) for r in fixed)
        else "",
        _selection_note(selected, fixed[0]) if selected and fixed else "",
        _fewer_tasks_note(rows, len(tasks)),
    ]
    if against:
        mean_diff = statistics.fmean(a["diff"] for a in against)
        parts += [
            f"`auto` against its fallback ({FALLBACK}) on the {len(against)} tasks where both had a learning rate"
            " of their own: paired difference over the seeds (points, auto minus fallback) ± its paired standard"
            " error, and what `auto` chose on seed 0 (from its log line). Where it chose the default, the two rows"
            " ran the same plan and differ only by their rates.",
            common.md_table(
                ["Suite", "Task", "auto minus fallback", "auto chose"],
                [[a["suite"], a["task"], f"{a['diff']:+.1f} ± {common.fmt(a['se'], 1)}", a["plan"]] for a in against],
            ),
            f"Mean over these tasks: {mean_diff:+.1f} points. Where the trials chose a plan other than the default:"
            f" {_trial_summary(against)}.",
        ]
    return "\n\n".join(p for p in parts if p)


def _fewer_tasks_note(rows: list[dict[str, Any]], tasks: int) -> str:
    """A caution for the rows that ran on fewer tasks than the table has: their means cover other tasks."""
    fewer = [f"{r['row']} ({r['tasks']} of {tasks})" for r in rows if r["tasks"] < tasks]
    if not fewer:
        return ""
    return (
        f"Rows run on fewer tasks: {', '.join(fewer)}. Their mean gaps are over those tasks only, so compare them with"
        " the other rows task by task (the plot), not by the mean."
    )


def _selection_note(selected: dict[str, Any], best_fixed: dict[str, Any]) -> str:
    """Whether choosing the policy per task on validation beat the one fixed policy with the smallest mean gap."""
    ahead = selected["mean_gap"] > best_fixed["mean_gap"]
    return (
        f"Row *{SELECTED}*: on each of its {selected['tasks']} tasks, the fixed policy with the best validation"
        " accuracy at its chosen rate (the suite's validation seeds, which are not its test seeds), scored on the"
        " test seeds, as a search over these policies on the same validation runs would have picked. Its mean gap"
        f" ({selected['mean_gap']:+.1f} ± {common.fmt(selected['se'], 1)}) is"
        f" {'smaller' if ahead else 'larger'} than that of the one fixed policy with the smallest mean gap"
        f" ({best_fixed['row']}, {best_fixed['mean_gap']:+.1f} ± {common.fmt(best_fixed['se'], 1)}): on these"
        f" validation splits, choosing per task {'gained over' if ahead else 'did worse than'} keeping one policy"
        " for every task."
    )


def _trial_summary(against: list[dict[str, Any]]) -> str:
    """The mean difference on the tasks where the trials, not the default, decided."""
    decided = [a for a in against if a["plan"].endswith("(trials)")]
    if not decided:
        return "no task"
    return f"{len(decided)} task(s), mean {statistics.fmean(a['diff'] for a in decided):+.1f} points"


def plot(tasks: list[Task], rows: list[dict[str, Any]], out_dir: str) -> str:
    """Every task's gap per row (one marker per suite), the rows in the table's order, the mean as a bar."""
    figure, axes = common.new_figure(8.5, 0.45 * len(rows) + 1.4)
    names = [r["row"] for r in rows][::-1]
    markers = dict(zip(SUITES, "osD^v", strict=True))
    for suite in SUITES:
        mine = [task for task in tasks if task.suite == suite]
        points = [(task.gap(n), y) for y, n in enumerate(names) for task in mine if n in task.accuracy]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=markers[suite], alpha=0.6, s=18, label=suite.label)
    for y, name in enumerate(names):
        mean = next(r["mean_gap"] for r in rows if r["row"] == name)
        axes.plot([mean, mean], [y - 0.35, y + 0.35], color="black", linewidth=2)
    axes.axvline(-NEAR, color="grey", linestyle=":", linewidth=1)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_xlabel("test accuracy minus the task's best fixed policy (points); bar: the mean")
    axes.legend(fontsize=7, loc="upper left")
    return common.save_figure(figure, out_dir, PLOT_FILE)
