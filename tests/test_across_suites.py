"""The benchmark that reads every policy suite together: gaps to each task's best, auto against its fallback."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import across_suites, run
from benchmarks.shift import AUTO, AUTO_SHARED
from benchmarks.shift_tasks import FALLBACK

TRIALS = (
    "AutoFreeze: 10 samples/class; validation loss ...;"
    " chose layer4 + head (lowest validation loss, 2.1 se below the default): from epoch 1 ..."
)
NO_TRIALS = "AutoFreeze: 10 samples/class; no trials; chose all groups (default: the trials would train 12 steps): ..."


def _suite(
    rows_by_task: dict[str, dict[str, list[float]]],
    decisions: dict[str, str],
    validation: dict[str, dict[str, float]] | None = None,
) -> dict:
    """A suite's result as its benchmark stores it: per task, per row, per shot count, one accuracy per seed; each
    row's validation accuracy (one validation seed) at rate 0.01, the rate chosen, and 5.0 at the rate 0.1."""
    validation = validation or {}
    return {
        "validation": {
            task: {row: {"0.01": [acc], "0.1": [5.0]} for row, acc in rows.items()} for task, rows in validation.items()
        },
        "chosen_lr": {task: {row: 0.01 for row in rows} for task, rows in validation.items()},
        "results": {
            task: {row: {"10": acc, "5": [0.0]} for row, acc in rows.items()} for task, rows in rows_by_task.items()
        },
        "auto_decisions": {task: {"10": line} for task, line in decisions.items()},
        "markdown": "### suite",
        "targets": {},
        "seconds": 1.0,
    }


def _results() -> dict:
    development = _suite(
        {
            "a": {
                "full": [80.0, 82.0],
                "probe": [70.0, 70.0],
                FALLBACK: [80.0, 81.0],
                AUTO: [81.0, 81.0],
                AUTO_SHARED: [75.0, 75.0],
            },
            "b": {
                "full": [60.0, 60.0],
                "probe": [66.0, 64.0],
                FALLBACK: [60.0, 62.0],
                AUTO: [60.0, 62.0],
                AUTO_SHARED: [61.0, 61.0],
            },
        },
        {"a": TRIALS, "b": NO_TRIALS},
        {"a": {"full": 70.0, "probe": 75.0, FALLBACK: 72.0}, "b": {"full": 80.0, "probe": 60.0, FALLBACK: 79.0}},
    )
    first_held_out = _suite(  # `auto` had one rate for every task there: not compared with its fallback
        {"c": {"full": [90.0, 90.0], "probe": [50.0, 52.0], FALLBACK: [88.0, 88.0], AUTO: [80.0, 80.0]}}, {"c": TRIALS}
    )
    return {
        "shift": development,
        "heldout": first_held_out,
        "transforms": {"markdown": "### transforms", "targets": {}, "seconds": 1.0},
    }


def test_every_row_is_scored_against_each_tasks_best_fixed_policy(tmp_path) -> None:
    result = across_suites.run(quick=False, out_dir=str(tmp_path), earlier=_results())
    rows = {r["row"]: r for r in result["policies"]}
    assert result["suites"] == ["heldout", "shift"] and len(result["tasks"]) == 3
    # best fixed policy: a -> full (81), b -> probe (65), c -> full (90); `auto` rows are never the best
    assert rows["full"]["mean_gap"] == pytest.approx(statistics.fmean([0.0, 60.0 - 65.0, 0.0]))
    assert rows["probe"]["mean_gap"] == pytest.approx(statistics.fmean([70.0 - 81.0, 0.0, 51.0 - 90.0]))
    assert rows[AUTO]["mean_gap"] == pytest.approx(statistics.fmean([0.0, 61.0 - 65.0, 80.0 - 90.0]))
    assert rows[AUTO_SHARED]["tasks"] == 2  # the first held-out suite has no such row
    assert (rows["full"]["best_on"], rows["probe"]["best_on"], rows[AUTO]["best_on"]) == (2, 1, 1)
    assert (rows["full"]["within_near"], rows[FALLBACK]["within_near"]) == (2, 1)
    assert rows["probe"]["worst_gap"] == pytest.approx(-39.0)
    assert result["policies"][0]["row"] == "full"  # sorted by the mean gap, best first


def test_the_policy_chosen_on_validation_is_scored_on_the_test_seeds_where_a_suite_kept_its_validation(tmp_path):
    result = across_suites.run(quick=False, out_dir=str(tmp_path), earlier=_results())
    rows = {r["row"]: r for r in result["policies"]}
    assert result["selected_on_validation"] == {"shift/a": "probe", "shift/b": "full", "heldout/c": None}
    selected = rows[across_suites.SELECTED]
    assert selected["tasks"] == 2 and selected["mean_gap"] == pytest.approx(statistics.fmean([70.0 - 81.0, 60 - 65.0]))
    assert rows["full"]["best_on"] == 2  # the chosen row is never a task's best fixed policy itself
    section = (tmp_path / across_suites.SECTION_FILE).read_text()
    assert "choosing per task did worse than keeping one policy for every task" in section


def test_auto_is_compared_with_its_fallback_only_where_both_had_their_own_rate(tmp_path) -> None:
    against = across_suites.run(quick=False, out_dir=str(tmp_path), earlier=_results())["auto_against_fallback"]
    assert [(a["task"], a["plan"]) for a in against] == [
        ("a", "layer4 + head (trials)"),
        ("b", "all groups (default, no trials)"),
    ]
    assert against[0]["diff"] == pytest.approx(0.5) and against[1]["diff"] == pytest.approx(0.0)
    assert against[0]["se"] == pytest.approx(statistics.stdev([1.0, 0.0]) / 2**0.5)


def test_the_section_and_plot_are_written_for_the_docs(tmp_path) -> None:
    result = across_suites.run(quick=False, out_dir=str(tmp_path), earlier=_results())
    section = (tmp_path / across_suites.SECTION_FILE).read_text()
    assert section.startswith("<!-- Generated by `python -m benchmarks.run --only across_suites`")
    assert "### across_suites" not in section and "| full | 3 | -1.7 ± 1.7 | 2 | 2 | -5.0 |" in section
    assert "Where the trials chose a plan other than the default: 1 task(s), mean +0.5 points." in section
    assert "Rows run on fewer tasks: auto (one lr for every task) (2 of 3), the fixed policy best on" in section
    assert (tmp_path / across_suites.PLOT_FILE).stat().st_size > 0 and result["targets"] == {}


def test_without_suite_results_it_says_what_to_run_and_draws_nothing(tmp_path) -> None:
    result = across_suites.run(quick=True, out_dir=str(tmp_path), earlier={})
    assert "No policy suite's results at 10 shots are on this page yet" in result["markdown"]
    assert not (tmp_path / across_suites.PLOT_FILE).exists()


def test_the_run_hands_it_the_pages_results_and_keeps_them(tmp_path) -> None:
    """``--only across_suites`` reads the suites kept in the page's results.json (same mode) and keeps them there."""
    page = {"machine": {}, "quick": False, "wall_seconds": 1.0, "results": _results()}
    (tmp_path / "results.json").write_text(json.dumps(page))
    assert run.main(["--only", "across_suites", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(saved) == {"shift", "heldout", "transforms", "across_suites"}
    assert saved["across_suites"]["suites"] == ["heldout", "shift"]
    quick_page = {**page, "quick": True}  # another mode's results are not this run's page
    (tmp_path / "results.json").write_text(json.dumps(quick_page))
    assert run.main(["--only", "across_suites", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["results"]["across_suites"]["suites"] == []


def test_the_lr_finder_reports_are_pooled_per_suite_and_over_every_task(tmp_path) -> None:
    def report(tasks: dict[str, tuple[float, bool, bool]]) -> dict:
        return {
            "tasks": {
                key: {"paired": [diff, 0.5], "near": near, "fast": fast} for key, (diff, near, fast) in tasks.items()
            },
            "markdown": "### finder",
            "targets": {},
            "seconds": 1.0,
        }

    earlier = {
        "heldout_lr_finder": report({"x": (-3.0, False, True), "y": (1.0, True, False)}),
        "heldout_e_lr_finder": report({"z": (0.5, True, True)}),
    }
    result = across_suites.run(quick=False, out_dir=str(tmp_path), earlier=earlier)
    assert [(r["suite"], r["task"]) for r in result["lr_finder"]] == [
        ("held-out 1", "x"),
        ("held-out 1", "y"),
        ("held-out 5", "z"),
    ]
    section = (tmp_path / across_suites.SECTION_FILE).read_text()
    assert "| held-out 1 | 2 | -1.0 ± 2.0 | 1 | 1 |" in section
    pooled_se = statistics.stdev([-3.0, 1.0, 0.5]) / 3**0.5
    assert f"| **every held-out suite** | 3 | -0.5 ± {pooled_se:.1f} | 2 | 2 |" in section
    assert "No policy suite's results" in section  # no policy suite on this page: the finder part still shows
