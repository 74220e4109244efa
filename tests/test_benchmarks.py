"""The benchmark suite: helpers, the CLI, and the smallest real benchmark in quick mode, whose verdicts must be the
comparisons of its own figures with its targets."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from benchmarks import common, run

pytestmark = pytest.mark.usefixtures("restored_process_state")  # the suite quiets its process


def test_md_table_and_stats() -> None:
    table = common.md_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]
    assert common.fmt_pm([1.0]) == "1.0"
    assert common.fmt_pm([1.0, 3.0]) == "2.0 ± 1.4"
    assert common.verdict(True) == "PASS" and common.verdict(False) == "MISS"
    assert common.median([3.0, 1.0, 2.0]) == 2.0


def test_interleaved_rotates_the_order() -> None:
    calls: list[str] = []
    samples = common.interleaved({n: (lambda n=n: calls.append(n) or 1.0) for n in "ab"}, repeats=2)
    assert calls == ["a", "b", "b", "a"] and samples == {"a": [1.0, 1.0], "b": [1.0, 1.0]}


def test_machine_header_names_cpu_cores_and_versions() -> None:
    info = common.machine_info()
    header = common.header_markdown(info)
    for key in ("cpu", "torch", "lightning", "timm", "albumentations"):
        assert str(info[key]) in header
    assert f"{info['cores']} cores" in header


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit):
        run.main(["--only", "nope"])


def test_ci_leaves_out_of_its_quick_benchmarks_only_those_whose_quick_run_a_test_makes() -> None:
    tests = Path(__file__).parent
    script = (tests.parent / ".ci" / "run").read_text()
    lines = re.findall(r"^TESTED\+?=(\S+)$", script, flags=re.MULTILINE)
    skipped = [name for line in lines for name in line.strip(",").split(",")]
    assert '--skip "$TESTED"' in script and len(skipped) == len(set(skipped)) >= 13, lines
    assert set(skipped) <= set(run.BENCHMARKS)
    quick_runs = "".join(
        (tests / name).read_text()
        for name in ("test_benchmarks.py", "test_benchmark_peers.py", "test_heldout_benchmark.py")
    )
    assert quick_runs.count('run.main(["--quick", "--only"') >= 7
    untested = [name for name in skipped if f'"{name}"' not in quick_runs]
    assert not untested, f".ci/run skips {untested}, whose quick run no test makes: CI would never run them"


def test_merge_takes_runs_made_in_parallel_into_one_page(tmp_path) -> None:
    def section(name: str, ok: bool) -> dict:
        return {"markdown": f"### The {name} section", "targets": {f"{name} goal": ok}, "seconds": 60.0}

    out, a, b = tmp_path / "docs", tmp_path / "a", tmp_path / "b"
    for folder, results in (
        (out, {"overhead": section("old overhead", True), "shift": section("old shift", True)}),
        (a, {"shift": section("new shift", False)}),
        (b, {"heldout": section("heldout", True)}),
    ):
        folder.mkdir()
        machine = {"cpu": f"CPU of {folder.name}", "cores": 2, "date": "2026-12-06 10:00 UTC"}
        (folder / "results.json").write_text(json.dumps({"machine": machine, "quick": False, "results": results}))
    (a / "shift_auto_decisions.md").write_text("decided")
    (a / "results.md").write_text("a's own page, not copied")
    assert run.main(["--merge", f"{a},{b}", "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())["results"]
    assert list(merged) == ["overhead", "shift", "heldout"]  # the suite's order; the others' latest kept
    assert merged["shift"]["markdown"] == "### The new shift section"
    text = (out / "results.md").read_text()
    assert "The old overhead section" in text and "The new shift section" in text and "old shift" not in text
    assert "| shift | new shift goal | MISS |" in text and "| heldout | heldout goal | PASS |" in text
    # each benchmark's machine: the one that ran it (the folder's), or "not recorded" for a kept result without one
    assert "| shift | 60 | CPU of a, 2 cores, 2026-12-06 10:00 UTC |" in text
    assert "| heldout | 60 | CPU of b, 2 cores, 2026-12-06 10:00 UTC |" in text
    assert "| overhead | 60 | not recorded |" in text
    assert (out / "shift_auto_decisions.md").read_text() == "decided"
    with pytest.raises(SystemExit):  # a quick run does not merge into full results
        run.main(["--merge", str(a), "--out", str(out), "--quick"])
    with pytest.raises(SystemExit):
        run.main(["--merge", str(tmp_path / "missing"), "--out", str(out)])


def test_a_full_run_leaves_the_held_out_suites_out_and_keeps_their_published_results(
    tmp_path, monkeypatch, capsys
) -> None:
    assert set(run.HELD_OUT) == {n for n in run.BENCHMARKS if n.startswith("heldout")} and len(run.HELD_OUT) == 10
    # the real runner on a two-benchmark suite: one cheap benchmark and one held-out suite
    monkeypatch.setattr(run, "BENCHMARKS", ("transforms", "heldout_c"))
    monkeypatch.setattr(run, "HELD_OUT", ("heldout_c",))
    published = {"markdown": "### The published held-out section", "targets": {"held-out goal": False}, "seconds": 1}
    (tmp_path / "results.json").write_text(json.dumps({"quick": False, "results": {"heldout_c": published}}))
    assert run.main(["--out", str(tmp_path)]) == 0
    assert "leaving out the held-out suites (heldout_c)" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(results) == {"transforms", "heldout_c"} and "error" not in results["transforms"]
    assert results["heldout_c"] == published  # not rerun: the published section stays as it was
    assert results["transforms"]["machine"]["cores"] == common.machine_info()["cores"]  # this run's machine
    assert "The published held-out section" in (tmp_path / "results.md").read_text()
    assert run.selected("heldout_c", quick=False) == ["heldout_c"]  # run by name, deliberately
    assert run.selected("", quick=True) == ["transforms", "heldout_c"]  # quick mode publishes nothing


def test_a_benchmark_that_raises_fails_the_run_after_the_page_is_written(tmp_path, monkeypatch, capsys) -> None:
    # a suite of two: one left out with --skip, one whose module cannot be imported
    monkeypatch.setattr(run, "BENCHMARKS", ("transforms", "not_a_module"))
    assert run.main(["--quick", "--skip", "transforms", "--out", str(tmp_path)]) == 1
    assert "failed (their errors are on the page): not_a_module" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert list(results) == ["not_a_module"]  # transforms was skipped
    assert results["not_a_module"]["error"].startswith("ModuleNotFoundError")
    assert "| not_a_module | (benchmark failed) | ERROR |" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit):  # a misspelt --skip is refused, not ignored
        run.main(["--quick", "--skip", "transform", "--out", str(tmp_path)])


@pytest.mark.slow  # over ~20 s on 2 cores; .ci/run's quick benchmarks leave it to this test
def test_quick_smith_verdicts_follow_its_numbers_and_the_others_are_kept(tmp_path, capsys) -> None:
    earlier = {"markdown": "### Earlier overhead section", "targets": {"t": False}, "seconds": 1.0}
    (tmp_path / "results.json").write_text(json.dumps({"quick": True, "results": {"overhead": earlier}}))
    assert run.main(["--quick", "--only", "smith", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    result = payload["results"]["smith"]
    assert "error" not in result, result.get("error")
    # the verdicts are the comparisons of the written figures with the stated targets
    [decay] = [name for name in result["acc"] if name.startswith("step decay")]
    [ramp] = [name for name in result["acc"] if name.startswith("batch ramp")]
    assert all(len(v) == 1 and 0 <= v[0] <= 100 for v in result["acc"].values())  # quick mode: one seed, in %
    gap = common.mean_std(result["acc"][ramp])[0] - common.mean_std(result["acc"][decay])[0]
    fewer = result["steps"][decay] / result["steps"][ramp]
    assert result["steps"][decay] > 0 and result["steps"][ramp] > 0
    expected = {"ramp within 0.5 point of step decay": gap >= -0.5, ">= 2x fewer optimizer steps": fewer >= 2.0}
    assert result["targets"] == expected
    text = (tmp_path / "results.md").read_text()
    for target, ok in {**expected, "t": False}.items():
        assert f"| {target} | {common.verdict(ok)} |" in text, target
    match, saving = (common.verdict(ok) for ok in expected.values())
    assert f"{gap:+.2f} point (target: within 0.5 point: **{match}**)" in text
    assert f"{fewer:.2f}x fewer optimizer steps (target >= 2x: **{saving}**)" in text
    assert text.index("Earlier overhead section") < text.index("Smith et al.")
    assert (tmp_path / "smith_schedules.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out


def test_source_weights_come_from_the_shared_source_recipe_and_are_cached(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    from lit_transfer.demo import source_model

    monkeypatch.setattr(common, "CACHE_DIR", tmp_path)
    common.set_threads(1)
    path, meta = common.source_weights(32, epochs=1)
    assert path.parent == tmp_path and path.is_file() and "_1ep_seed42_" in path.name
    assert meta["epochs"] == 1 and meta["seed"] == source_model.SOURCE_SEED and 0 <= meta["source_test_acc"] <= 100
    for arg in ("--model.label_smoothing=0.1", "--model.optimizer.init_args.lr=0.003"):
        assert arg in meta["args"]
    assert f"--data.train_transform={source_model.DIGIT_AUGMENT}" in meta["args"]
    assert not [key for key in load_file(str(path)) if key.startswith("fc.")]  # a fresh head on load

    def no_training(*args: object) -> None:
        raise AssertionError("the cached weights should be reused")

    monkeypatch.setattr(source_model, "train_source", no_training)
    assert common.source_weights(32, epochs=1) == (path, meta)


def test_transfer_table_rows_differ_only_in_freezing_and_layer_decay() -> None:
    from benchmarks import transfer_table
    from lit_transfer.demo.source_model import DIGIT_AUGMENT

    table = transfer_table.policies(transfer_table.EPOCHS)
    assert len(table) == 8 and "scratch" in table and "linear_probe" in table
    allowed = {"freeze", "layer_decay", "scratch", "lr"}
    for name, spec in table.items():
        assert set(spec) <= allowed, name
        assert "lr" not in spec or name == "linear_probe", name
    assert transfer_table.augmentation() == json.loads(DIGIT_AUGMENT)
    assert all("Flip" not in step["class_path"] for step in transfer_table.augmentation())


def test_every_row_gets_its_rate_per_task_and_the_shared_auto_row_one_for_all() -> None:
    from benchmarks import shift

    scores = {
        "a": {"auto": {0.1: [90.0, 88.0], 0.3: [70.0, 72.0]}, "full fine-tune": {0.1: [50.0], 0.3: [70.0]}},
        "b": {"auto": {0.1: [60.0, 62.0], 0.3: [75.0, 73.0]}, "full fine-tune": {0.1: [65.0], 0.3: [40.0]}},
    }
    for by_policy in scores.values():
        by_policy[shift.AUTO_SHARED] = by_policy[shift.AUTO]
    chosen = shift.pick_lrs(scores)
    assert chosen["a"]["auto"] == 0.1 and chosen["b"]["auto"] == 0.3  # per task, like every fixed row
    assert chosen["a"]["full fine-tune"] == 0.3 and chosen["b"]["full fine-tune"] == 0.1
    assert chosen["a"][shift.AUTO_SHARED] == chosen["b"][shift.AUTO_SHARED] == 0.1  # 89 + 61 > 71 + 74
    assert not shift.is_fixed(shift.AUTO) and not shift.is_fixed(shift.AUTO_SHARED) and shift.is_fixed("linear probe")


def test_shift_input_task_inverts_every_scan_and_keeps_the_splits() -> None:
    from benchmarks import shift, shift_tasks

    output, inputs = shift_tasks.TASKS
    assert output.target_classes == common.TARGET_CLASSES and not output.inverted
    assert inputs.source_classes == inputs.target_classes == tuple(range(10)) and inputs.inverted
    clean = output.datamodule(5, seed=3)
    inverted = shift_tasks.InvertedDigits(classes=output.target_classes, shots_per_class=5, seed=3)
    (a, labels_a, splits_a), (b, labels_b, splits_b) = clean._splits(), inverted._splits()
    assert splits_a == splits_b and (labels_a == labels_b).all() and (a.astype(int) + b == 255).all()
    assert isinstance(inputs.datamodule(1, seed=0), shift_tasks.InvertedDigits)
    table, missing = shift_tasks.policies(12)
    assert len(table) + len(missing) == 10 and not set(table) & set(missing)
    assert table[shift.AUTO] == table[shift.AUTO_SHARED] == {"freeze": "auto"}  # the same auto, two LR protocols
    assert {"linear probe", "first group + head", "last group + head", "full fine-tune", "auto"} <= {*table, *missing}
    assert table[shift_tasks.FALLBACK]["layer_decay"] == shift_tasks.LAYER_DECAY
    assert all(set(spec) <= {"freeze", "layer_decay"} for spec in table.values())


@pytest.mark.slow
def test_quick_shift_verdicts_follow_its_numbers(tmp_path) -> None:
    from benchmarks import shift

    assert run.main(["--quick", "--only", "shift", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["shift"]
    assert "error" not in result, result.get("error")
    runs = result["results"]
    assert set(runs) == {"output", "input"} and set(runs["output"]) == set(runs["input"])
    assert all(len(v["1"]) == 1 and 0 <= v["1"][0] <= 100 for task in runs.values() for v in task.values())
    # the lr each policy ran with is the best of its validation scores (auto: one lr for both tasks)
    for key, by_policy in result["chosen_lr"].items():
        for policy, lr in by_policy.items():
            tried = result["validation"][key][policy]
            assert str(lr) in tried or repr(lr) in tried
    targets = result["targets"]
    if "auto" in runs["output"]:
        means = {key: {p: common.mean_std(v["1"])[0] for p, v in task.items()} for key, task in runs.items()}
        fixed = [p for p in means["output"] if p != "auto"]
        near = all(means[k]["auto"] >= max(means[k][p] for p in fixed) - 1.0 for k in means)
        full = all(means[k]["auto"] >= means[k][shift.FULL] for k in means)
        average = {p: (means["output"][p] + means["input"][p]) / 2 for p in means["output"]}
        ahead = all(average["auto"] > average[p] for p in fixed)
        assert list(targets.values()) == [near, full, ahead]
        decisions = (tmp_path / shift.DECISIONS_FILE).read_text()
        assert decisions.count("AutoFreeze:") == 2, decisions
    else:
        assert not any(targets.values())
    text = (tmp_path / "results.md").read_text()
    assert "{#shift}" in text and "Selected on validation, never on test" in text
    assert (tmp_path / "shift_accuracy_vs_shots.png").stat().st_size > 0


@pytest.mark.slow  # over ~20 s on 2 cores; .ci/run's quick benchmarks leave it to this test
def test_quick_canvases_reports_the_transfer_gain_it_measured(tmp_path) -> None:
    assert run.main(["--quick", "--only", "canvases", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["canvases"]
    assert "error" not in result, result.get("error")
    multilabel, regression = result["results"]["multilabel"], result["results"]["regression"]
    assert set(multilabel) == set(regression) and "scratch" in multilabel and "full_fine_tune" in multilabel
    assert all(0 <= v <= 100 for scores in multilabel.values() for k in ("map", "f1") for v in scores[k])
    assert all(v >= 0 for scores in regression.values() for v in scores["mae"])
    gain = result["transfer_gain"]
    assert gain["multilabel_map_points"] == pytest.approx(
        [a - b for a, b in zip(multilabel["full_fine_tune"]["map"], multilabel["scratch"]["map"])]
    )
    assert gain["regression_mae_reduction"] == pytest.approx(
        [b - a for a, b in zip(regression["full_fine_tune"]["mae"], regression["scratch"]["mae"])]
    )
    assert "Multi-label and regression transfer" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_quick_segmentation_reports_the_transfer_gain_it_measured(tmp_path) -> None:
    assert run.main(["--quick", "--only", "segmentation", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["segmentation"]
    assert "error" not in result, result.get("error")
    by_shots = result["results"]
    assert set(by_shots) == {"5", "20"}
    for scores in by_shots.values():
        assert {"frozen encoder", "LP-FT", "full fine-tune", "auto", "scratch"} <= set(scores)
        assert all(0 <= v <= 100 for values in scores.values() for v in values)
    for shots, gain in result["transfer_gain_miou_points"].items():
        expected = [a - b for a, b in zip(by_shots[shots]["full fine-tune"], by_shots[shots]["scratch"])]
        assert gain == pytest.approx(expected)
    assert "Semantic segmentation transfer" in (tmp_path / "results.md").read_text()
    chose = result["auto_chose"]  # auto's trials ran on the validation canvases: a candidate, not the default
    assert set(chose) == {"5", "20"} and all(len(c) == 1 for c in chose.values())
    reasons = [r for rs in result["auto_reasons"].values() for r in rs]
    assert all(not r.startswith("default:") or "paired standard" in r for r in reasons), reasons  # not a fallback


@pytest.mark.slow  # over ~15 s on 2 cores
@pytest.mark.parametrize(
    "name",
    ["heldout_lr_finder", "heldout_b_lr_finder", "heldout_c_lr_finder", "heldout_d_lr_finder", "heldout_e_lr_finder"],
)
def test_quick_heldout_lr_finder_figures_and_verdicts_follow_its_runs(tmp_path, name) -> None:
    import importlib

    from benchmarks import heldout_lr_finder

    suite = importlib.import_module(f"benchmarks.{name}").SUITE
    assert run.main(["--quick", "--only", name, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"][name]
    assert "error" not in result, result.get("error")
    keys = list(suite.quick_tasks)
    seeds = list(heldout_lr_finder.QUICK["seeds"])
    assert list(result["tasks"]) == keys and result["config"]["seeds"] == seeds
    near, fast = True, True
    for key in keys:
        task, runs = result["tasks"][key], result["runs"][key]
        assert len(runs["grid"]) == len(runs["finder"]) == len(seeds)
        assert str(result["grid_lr"][key]) in result["validation"][key]  # the grid's lr is one it was scored with
        finder, grid = [r["test_acc"] for r in runs["finder"]], [r["test_acc"] for r in runs["grid"]]
        assert task["finder_acc"] == finder and task["grid_acc"] == grid
        assert all(0 <= acc <= 100 for acc in finder + grid)
        assert task["finder_lr"] == [r["lr"] for r in runs["finder"]]
        assert all(r["lr"] is not None and 0 < r["lr"] <= 1.0 for r in runs["finder"])
        assert all(0 < r["steps"] <= result["config"]["num_steps"] for r in runs["finder"])
        # the paired difference is the mean of the per-seed differences; the ratio is finder time over its fit's
        diffs = [a - b for a, b in zip(finder, grid)]
        assert task["paired"][0] == pytest.approx(sum(diffs) / len(diffs))
        ratios = [r["finder_seconds"] / r["fit_seconds"] for r in runs["finder"]]
        assert task["time_ratio"] == pytest.approx(ratios) and all(r > 0 for r in ratios)
        near = near and common.mean_std(finder)[0] >= common.mean_std(grid)[0] - heldout_lr_finder.NEAR
        fast = fast and common.mean_std(ratios)[0] < heldout_lr_finder.TIME_SHARE
    assert list(result["targets"].values()) == [near, fast]
    assert all(target.startswith(f"{suite.label}: ") for target in result["targets"])
    section = (tmp_path / suite.section_file).read_text()
    assert section.startswith(suite.generated) and f"{{#{suite.anchor}}}" not in section
    assert "not the held-out result" in section and f"{result['tasks'][keys[0]]['paired'][0]:+.1f}" in section
    text = (tmp_path / "results.md").read_text()
    assert f"### {suite.heading} {{#{suite.anchor}}}" in text
    for target, ok in zip(result["targets"], [near, fast]):
        assert f"| {name} | {target} | {common.verdict(ok)} |" in text


def test_the_finder_suites_report_each_held_out_suite_in_its_own_section() -> None:
    from benchmarks import (
        heldout,
        heldout_b,
        heldout_b_lr_finder,
        heldout_c,
        heldout_c_lr_finder,
        heldout_d,
        heldout_d_lr_finder,
        heldout_e_lr_finder,
        heldout_e_tasks,
        heldout_lr_finder,
    )

    first, second, third = heldout_lr_finder.SUITE, heldout_b_lr_finder.SUITE, heldout_c_lr_finder.SUITE
    fourth, fifth = heldout_d_lr_finder.SUITE, heldout_e_lr_finder.SUITE
    assert first.tasks == heldout_lr_finder.TASKS and second.tasks == heldout_b.SUITE.tasks
    assert third.tasks == heldout_c.SUITE.tasks and third.seeds == heldout_c.SUITE.seeds
    assert fourth.tasks == heldout_d.SUITE.tasks and fourth.seeds == heldout_d.SUITE.seeds
    assert fifth.tasks == heldout_e_tasks.TASKS  # the finder's own suite: no auto suite runs these tasks
    for later in (second, third, fourth, fifth):
        assert later.seeds == tuple(range(10)) and set(later.quick_tasks) <= {t.key for t in later.tasks}
    # the grid's rate is chosen as the held-out suite chooses its rows' rates: on its validation seeds
    assert [s.select_seeds for s in (first, second, third)] == [heldout.SUITE.select_seeds] * 3 == [(100,)] * 3
    assert fourth.select_seeds == fifth.select_seeds == heldout_d.SUITE.select_seeds == (100, 101, 102)
    names = [(s.section_file, s.anchor, s.label) for s in (first, second, third, fourth, fifth)]
    assert len({name for triple in names for name in triple}) == 15
    assert heldout_lr_finder.SECTION_FILE == "heldout_lr_finder_section.md"  # the first suite's page is unchanged
    assert first.generated == heldout_lr_finder.GENERATED and "--only heldout_lr_finder`" in first.generated


def _check_fresh_task(task, earlier: tuple, earlier_heldout: tuple) -> Any:
    """A held-out task's shift is new (its corruption or class split), its data at its own size; its first batch."""
    from benchmarks import heldout_tasks

    used_corruptions = {t.corruption for t in earlier_heldout if t.level == "input"}
    used_splits = {(t.source_classes, t.target_classes) for t in earlier if not getattr(t, "corruption", "")}
    assert not task.inverted, task.key  # the development suite's input shift
    if task.level == "input":
        assert task.source_classes == task.target_classes and task.corruption in heldout_tasks.CORRUPTIONS
        assert task.corruption not in used_corruptions, task.key
    else:
        assert (task.source_classes, task.target_classes) not in used_splits, task.key
        assert not set(task.source_classes) & set(task.target_classes), task.key
        assert not any(set(task.target_classes) == set(t) for _, t in used_splits if t != tuple(range(10)))
    data = task.datamodule(1, seed=0)  # each task's scans at its own input size
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape[-2:] == (task.image_size, task.image_size) and len(set(labels.tolist())) > 1
    assert isinstance(data, heldout_tasks.CorruptedDigits) == (task.level == "input"), task.key
    return images


def test_heldout_b_tasks_share_no_shift_and_no_backbone_with_the_earlier_suites() -> None:
    from benchmarks import heldout_b_tasks, heldout_tasks, shift_tasks

    tasks, earlier = heldout_b_tasks.TASKS, (*shift_tasks.TASKS, *heldout_tasks.TASKS)
    assert len(tasks) >= 4 and len({t.key for t in tasks}) == len(tasks)
    assert [t.level for t in tasks].count("input") >= 2 and [t.level for t in tasks].count("output") >= 2
    kinds = {"resnet": "ResNet", "mobilenet": "MobileNet", "efficientnet": "MobileNet", "vit": "ViT", "test_vit": "ViT"}
    families = {next(kind for prefix, kind in kinds.items() if t.backbone.startswith(prefix)) for t in tasks}
    assert families == {"ResNet", "MobileNet", "ViT"}, families
    assert not {t.backbone for t in tasks} & {t.backbone for t in earlier}
    for task in tasks:
        _check_fresh_task(task, earlier, heldout_tasks.TASKS)


def _check_fixed_per_scan(*corruptions: str) -> Any:
    """Each corruption is fixed per scan (by its index, whatever the split and seed), keeps the splits, labels,
    shape and dtype, and changes nearly every scan; the clean scans."""
    import numpy as np

    from benchmarks import heldout_tasks

    clean, labels, splits = heldout_tasks.DigitsDataModule(classes=(0, 1, 2), shots_per_class=3, seed=5)._splits()
    for corruption in corruptions:
        one = heldout_tasks.CorruptedDigits(corruption, classes=(0, 1, 2), shots_per_class=3, seed=5)._splits()
        other = heldout_tasks.CorruptedDigits(corruption, classes=(0, 1, 2), shots_per_class=3, seed=6)._splits()[0]
        assert one[2] == splits and (one[1] == labels).all()  # the same splits, labels and few-shot draws
        assert one[0].dtype == np.uint8 and one[0].shape == clean.shape
        assert (other == one[0]).all() and (heldout_tasks.corrupt(clean, corruption) == one[0]).all()
        assert (one[0] != clean).any(axis=(1, 2)).mean() > 0.9, corruption  # nearly every scan changes
        assert (heldout_tasks.corrupt(clean[:20], corruption) == one[0][:20]).all()  # a scan's own, by its index
    return clean


def test_mirror_and_dilate_are_fixed_per_scan_keep_the_shape_and_change_every_scan() -> None:
    import numpy as np

    from benchmarks import heldout_tasks

    clean = _check_fixed_per_scan("mirror", "dilate")
    mirrored = heldout_tasks.corrupt(clean, "mirror")
    assert (mirrored == clean[:, :, ::-1]).all() and (heldout_tasks.corrupt(mirrored, "mirror") == clean).all()
    dilated = heldout_tasks.corrupt(clean, "dilate")
    assert (dilated >= clean).all() and (dilated > 128).sum() > 1.5 * (clean > 128).sum()  # thicker strokes
    dot = np.zeros((1, 8, 8), dtype=np.uint8)
    dot[0, 0, 0], dot[0, 4, 5] = 200, 90
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[[0, 0, 1], [0, 1, 0]] = 200  # a plus clipped at the corner
    expected[[4, 3, 5, 4, 4], [5, 5, 5, 4, 6]] = 90
    assert (heldout_tasks.corrupt(dot, "dilate")[0] == expected).all()


def test_heldout_b_section_has_its_own_heading_goals_and_history() -> None:
    from benchmarks import heldout, heldout_b, shift_tasks

    suite, tasks = heldout_b.SUITE, heldout_b.SUITE.tasks
    assert (suite.name, suite.anchor) == ("heldout_b", "heldout-b") and "heldout_b" in run.BENCHMARKS
    assert (suite.section_file, suite.decisions_file) == ("heldout_b_section.md", "heldout_b_auto_decisions.md")
    assert heldout.SUITE.section_file == heldout.SECTION_FILE == "heldout_section.md"
    policies = ("linear probe", heldout.FULL, shift_tasks.FALLBACK, heldout.AUTO)
    # made-up accuracies: the section's layout is under test, not a result
    results = {t.key: {p: {10: [60.0 + i + j, 61.0 + i]} for j, p in enumerate(policies)} for i, t in enumerate(tasks)}
    seconds = {t.key: {heldout.AUTO: [6.0, 8.0], shift_tasks.FALLBACK: [4.0, 4.0]} for t in tasks}
    pairs = heldout.compare(results, seconds, 10, tasks)
    assert all(pairs[t.key]["best_fixed"] == shift_tasks.FALLBACK for t in tasks)
    assert pairs[tasks[0].key]["vs_best"] == pytest.approx((0.5, 0.5)) and pairs[tasks[0].key]["time_ratio"] == [
        1.5,
        2.0,
    ]
    targets, notes, averaged = heldout.goals(results, pairs, 10, suite)
    assert all(name.startswith("held-out B: ") for name in targets) and len(notes) == len(tasks) + 1
    sources = {t.key: (t.key, {"source_test_acc": 95.0, "train_seconds": 60.0}) for t in tasks}
    chosen = {t.key: {p: 1e-3 for p in policies} for t in tasks}
    scores = {t.key: {p: {1e-3: [50.0]} for p in policies} for t in tasks}
    args = (dict.fromkeys(policies), results, pairs, averaged, chosen, scores, sources, (0, 1), (10,), notes)
    full, quick = heldout.section(False, *args, suite), heldout.section(True, *args, suite)
    assert full.startswith(f"### {suite.heading} {{#heldout-b}}") and suite.history in full
    assert "second held-out suite" in suite.history.lower() and "run once" in suite.history
    assert "as they came" in suite.history and suite.history not in quick and "not the held-out result" in quick
    assert "32x32 or 64x64" in full and all(t.title in full for t in tasks)
    assert (heldout.SUITE.anchor, heldout.SUITE.label) == ("heldout", "held-out")  # the first suite's, unchanged


@pytest.mark.slow  # about a minute each, with the 1-epoch sources cached
@pytest.mark.parametrize(
    ("name", "label"), [("heldout_b", "held-out B"), ("heldout_c", "held-out C"), ("heldout_d", "held-out D")]
)
def test_quick_later_suites_write_their_own_files_and_their_verdicts_follow_their_numbers(
    tmp_path, name: str, label: str
) -> None:
    from benchmarks import heldout, heldout_b, heldout_c, heldout_d, shift_tasks

    suites = (heldout.SUITE, heldout_b.SUITE, heldout_c.SUITE, heldout_d.SUITE)
    [suite] = [s for s in suites if s.name == name]
    assert run.main(["--quick", "--only", name, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"][name]
    assert "error" not in result, result.get("error")
    runs, keys, shots = result["results"], [t.key for t in suite.tasks], str(result["config"]["shots"][-1])
    assert list(runs) == keys and all(set(runs[k]) == set(heldout.QUICK["policies"]) for k in keys)
    assert all(len(v[shots]) == 1 and 0 <= v[shots][0] <= 100 for task in runs.values() for v in task.values())
    assert {key: (meta["backbone"], meta["image_size"]) for key, meta in result["sources"].items()} == {
        t.key: (t.backbone, t.image_size) for t in suite.tasks
    }
    assert result["config"]["select_seeds"] == list(suite.select_seeds[:1])  # quick: the first validation seed
    acc = {k: {p: v[shots][0] for p, v in task.items()} for k, task in runs.items()}
    fixed = [p for p in acc[keys[0]] if p != heldout.AUTO]
    best = {k: max(fixed, key=lambda p, k=k: acc[k][p]) for k in keys}
    wall = result["run_seconds"]
    ratios = {k: wall[k][heldout.AUTO][0] / wall[k][shift_tasks.FALLBACK][0] for k in keys}
    average = {p: sum(acc[k][p] for k in keys) / len(keys) for p in acc[keys[0]]}
    expected = [
        all(acc[k][heldout.AUTO] - acc[k][best[k]] >= -heldout.NEAR for k in keys),
        all(acc[k][heldout.AUTO] >= acc[k][heldout.FULL] for k in keys),
        all(average[heldout.AUTO] > average[p] for p in fixed),
        all(ratios[k] <= heldout.TIME_RATIO for k in keys),
    ]
    assert list(result["targets"].values()) == expected and all(t.startswith(f"{label}: ") for t in result["targets"])
    assert (tmp_path / suite.decisions_file).read_text().count("AutoFreeze:") == len(keys)
    section = (tmp_path / suite.section_file).read_text()
    anchor = f"{{#{suite.anchor}}}"
    assert section.startswith(suite.generated) and anchor not in section and "not the held-out result" in section
    for other in suites:  # the other suites' files are left alone
        if other is not suite:
            assert not (tmp_path / other.section_file).exists() and not (tmp_path / other.decisions_file).exists()
    text = (tmp_path / "results.md").read_text()
    assert anchor in text
    for target, ok in zip(result["targets"], expected):
        assert f"| {name} | {target} | {common.verdict(ok)} |" in text


@pytest.mark.parametrize("suite", ["c", "d", "e"])
def test_later_suites_tasks_share_no_shift_and_no_backbone_with_the_earlier_suites(suite: str) -> None:
    import timm

    from benchmarks import (
        heldout_b_tasks,
        heldout_c_tasks,
        heldout_d_tasks,
        heldout_e_tasks,
        heldout_tasks,
        shift_tasks,
    )
    from lit_transfer.freezing.layer_groups import layer_groups

    later = {"c": (), "d": heldout_c_tasks.TASKS, "e": (*heldout_c_tasks.TASKS, *heldout_d_tasks.TASKS)}[suite]
    earlier_heldout = (*heldout_tasks.TASKS, *heldout_b_tasks.TASKS, *later)
    tasks = {"c": heldout_c_tasks, "d": heldout_d_tasks, "e": heldout_e_tasks}[suite].TASKS
    earlier = (*shift_tasks.TASKS, *earlier_heldout)
    assert len(tasks) >= 4 and len({t.key for t in tasks}) == len(tasks)
    assert [t.level for t in tasks].count("input") >= 2 and [t.level for t in tasks].count("output") >= 2
    kinds = {
        "resnet": "ResNet",
        "regnet": "ResNet",
        "mobilenet": "MobileNet",
        "efficientnet": "MobileNet",
        "convnext": "ViT or ConvNeXt",
        "efficientvit": "ViT or ConvNeXt",
        "vit": "ViT or ConvNeXt",
        "deit": "ViT or ConvNeXt",
    }
    families = {next(kind for prefix, kind in kinds.items() if t.backbone.startswith(prefix)) for t in tasks}
    assert families == {"ResNet", "MobileNet", "ViT or ConvNeXt"}, families
    assert len({t.backbone for t in tasks}) == len(tasks)  # one architecture per task
    assert not {t.backbone for t in tasks} & {t.backbone for t in earlier}
    for task in tasks:
        images = _check_fresh_task(task, earlier, earlier_heldout)
        # the package groups the architecture by timm's group_matcher (stem, stages, head), not by its children
        model = timm.create_model(task.backbone, num_classes=len(task.target_classes))
        groups = layer_groups(model)
        assert hasattr(model, "group_matcher") and len(groups) >= 5 and groups[-1].name == "head", task.backbone
        assert model(images[:2]).shape == (2, len(task.target_classes))


def test_pixelate_and_blot_are_fixed_per_scan_keep_the_shape_and_change_nearly_every_scan() -> None:
    import numpy as np

    from benchmarks import heldout_tasks

    clean = _check_fixed_per_scan("pixelate", "blot")
    pixelated = heldout_tasks.corrupt(clean, "pixelate")
    blocks = pixelated.reshape(-1, 4, 2, 4, 2)
    assert (blocks == blocks[:, :, :1, :, :1]).all()  # every 2x2 block is one grey level
    means = clean.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))
    assert np.abs(blocks[:, :, 0, :, 0] - means).max() <= 0.5  # ... the block's mean, rounded
    assert (heldout_tasks.corrupt(pixelated, "pixelate") == pixelated).all()
    dot = np.zeros((1, 8, 8), dtype=np.uint8)
    dot[0, 0, 0], dot[0, 4, 5], dot[0, 5, 4], dot[0, 7, 7] = 200, 90, 91, 3
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[0:2, 0:2], expected[4:6, 4:6], expected[6:8, 6:8] = 50, 45, 1  # 200/4; 181/4 = 45.25; 3/4 = 0.75
    assert (heldout_tasks.corrupt(dot, "pixelate")[0] == expected).all()
    blotted = heldout_tasks.corrupt(clean, "blot")
    assert (blotted >= clean).all() and ((blotted != clean) <= (blotted == 255)).all()  # only full-intensity ink
    empty = np.zeros((3, 8, 8), dtype=np.uint8)
    expected_blots = np.zeros((3, 8, 8), dtype=np.uint8)
    for scan, (top, left) in enumerate([(5, 0), (2, 4), (5, 3)]):  # the first three corners of BLOT_SEED's draw
        expected_blots[scan, top : top + 3, left : left + 3] = 255
    assert (heldout_tasks.corrupt(empty, "blot") == expected_blots).all()


def test_flip_and_outline_are_fixed_per_scan_keep_the_shape_and_change_nearly_every_scan() -> None:
    import numpy as np

    from benchmarks import heldout_tasks

    clean = _check_fixed_per_scan("flip", "outline")
    flipped = heldout_tasks.corrupt(clean, "flip")
    assert (flipped == clean[:, ::-1, :]).all() and (heldout_tasks.corrupt(flipped, "flip") == clean).all()
    outlined = heldout_tasks.corrupt(clean, "outline")
    dilated = heldout_tasks.corrupt(clean, "dilate")
    assert (outlined <= dilated).all()  # dilation minus a non-negative erosion
    bar = np.zeros((1, 8, 8), dtype=np.uint8)
    bar[0, 2:6, 1:7] = 200  # a thick bar: its inside goes dark, its rim and the pixels around it bright
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[1:7, 1:7], expected[2:6, 0:8] = 200, 200  # the dilated bar (a plus clipped at the scan's edges)
    expected[3:5, 2:6] = 0  # the eroded bar (the pixels whose 4 neighbours are all in the bar)
    assert (heldout_tasks.corrupt(bar, "outline")[0] == expected).all()


def _made_up_section(suite: Any, validation: list[float]) -> tuple[dict[str, bool], list[str], str, str]:
    """A held-out suite's goals, notes and sections (full run, quick run) from made-up accuracies (the layout is
    under test, not a result); ``validation``: the accuracies of every row's one learning rate, one per seed."""
    from benchmarks import heldout, shift_tasks

    tasks = suite.tasks
    policies = ("linear probe", heldout.FULL, shift_tasks.FALLBACK, heldout.AUTO)
    results = {t.key: {p: {10: [60.0 + i + j, 61.0 + i]} for j, p in enumerate(policies)} for i, t in enumerate(tasks)}
    seconds = {t.key: {heldout.AUTO: [6.0, 8.0], shift_tasks.FALLBACK: [4.0, 4.0]} for t in tasks}
    pairs = heldout.compare(results, seconds, 10, tasks)
    targets, notes, averaged = heldout.goals(results, pairs, 10, suite)
    sources = {t.key: (t.key, {"source_test_acc": 95.0, "train_seconds": 60.0}) for t in tasks}
    chosen = {t.key: {p: 1e-3 for p in policies} for t in tasks}
    scores = {t.key: {p: {1e-3: validation} for p in policies} for t in tasks}
    args = (dict.fromkeys(policies), results, pairs, averaged, chosen, scores, sources, (0, 1), (10,), notes)
    return targets, notes, heldout.section(False, *args, suite), heldout.section(True, *args, suite)


def test_heldout_d_section_says_its_rates_come_from_three_validation_seeds() -> None:
    from benchmarks import heldout, heldout_b, heldout_c, heldout_d

    suite, tasks = heldout_d.SUITE, heldout_d.SUITE.tasks
    assert (suite.name, suite.anchor) == ("heldout_d", "heldout-d") and "heldout_d" in run.BENCHMARKS
    assert (suite.section_file, suite.decisions_file) == ("heldout_d_section.md", "heldout_d_auto_decisions.md")
    earlier = (heldout.SUITE, heldout_b.SUITE, heldout_c.SUITE)
    for field in ("name", "anchor", "label", "heading", "history", "section_file", "decisions_file"):
        assert getattr(suite, field) not in {getattr(other, field) for other in earlier}, field
    assert suite.select_seeds == (100, 101, 102) and not set(suite.select_seeds) & set(suite.seeds)
    assert all(other.select_seeds == (100,) for other in earlier)  # their published protocol, unchanged
    targets, notes, full, quick = _made_up_section(suite, [50.0, 52.0, 54.0])
    assert all(name.startswith("held-out D: ") for name in targets) and len(notes) == len(tasks) + 1
    assert full.startswith(f"### {suite.heading} {{#heldout-d}}") and suite.history in full
    assert "fourth held-out suite" in suite.history.lower() and "three validation seeds" in suite.history
    assert "over seed(s) 100, 101, 102 (by their mean validation accuracy)" in full and "0.001: 52.0" in full
    assert "over seed(s) 100 (by their mean validation accuracy)" in quick and suite.history not in quick


def test_heldout_c_section_has_its_own_heading_goals_and_history() -> None:
    from benchmarks import heldout, heldout_b, heldout_c

    suite, tasks = heldout_c.SUITE, heldout_c.SUITE.tasks
    assert (suite.name, suite.anchor) == ("heldout_c", "heldout-c") and "heldout_c" in run.BENCHMARKS
    assert (suite.section_file, suite.decisions_file) == ("heldout_c_section.md", "heldout_c_auto_decisions.md")
    earlier = (heldout.SUITE, heldout_b.SUITE)
    for field in ("name", "anchor", "label", "heading", "history", "section_file", "decisions_file"):
        assert getattr(suite, field) not in {getattr(other, field) for other in earlier}, field
    targets, notes, full, quick = _made_up_section(suite, [50.0])
    assert all(name.startswith("held-out C: ") for name in targets) and len(notes) == len(tasks) + 1
    assert full.startswith(f"### {suite.heading} {{#heldout-c}}") and suite.history in full
    assert "third held-out suite" in suite.history.lower() and "max_trial_share" in suite.history
    assert "run once" in suite.history and "as they came" in suite.history
    assert suite.history not in quick and "not the held-out result" in quick
    assert "32x32 or 64x64" in full and all(t.title in full for t in tasks)
    assert suite.generated == common.generated_notice("heldout_c") and "--only heldout_c`" in suite.generated


def test_each_held_out_suite_runs_its_own_seeds_unless_the_variable_says_otherwise(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    from benchmarks import heldout, heldout_b, heldout_c, heldout_d

    suites = (heldout.SUITE, heldout_b.SUITE, heldout_c.SUITE, heldout_d.SUITE)
    monkeypatch.delenv(heldout.SEEDS_ENV, raising=False)
    assert [s.seeds for s in suites] == [(0, 1, 2, 3, 4), *[tuple(range(10))] * 3]
    assert [s.reported_seeds for s in suites] == [s.seeds for s in suites]
    monkeypatch.setenv(heldout.SEEDS_ENV, "3")
    assert all(s.reported_seeds == (0, 1, 2) for s in suites)
    monkeypatch.delenv(heldout.SEEDS_ENV)
    # the full run (its sources, LR selection and fine-tunes replaced by made-up stand-ins) uses the suite's seeds,
    # and chooses the learning rates on the suite's validation seeds
    monkeypatch.setattr(common, "set_threads", lambda n=1: None)
    monkeypatch.setattr(common, "quiet", lambda: None)
    meta = {"source_test_acc": 95.0, "train_seconds": 60.0}
    monkeypatch.setattr(common, "source_weights", lambda *args, **kwargs: (Path("weights"), meta))

    def select_lrs(table, weights, seeds, quick, workers, tasks, **settings):
        selected_on.append(seeds)
        return {t.key: dict.fromkeys(table, 1e-3) for t in tasks}, {
            t.key: {p: {1e-3: [50.0]} for p in table} for t in tasks
        }

    def fine_tune_all(jobs, workers, label, runner):
        assert not any(job["limit_eval_batches"] for job in jobs)  # the full run's settings
        return [(50.0 + job["seed"], ["AutoFreeze: made up"], 1.0) for job in jobs]

    monkeypatch.setattr(heldout, "select_lrs", select_lrs)
    monkeypatch.setattr(heldout, "fine_tune_all", fine_tune_all)
    for suite in (heldout_c.SUITE, heldout_d.SUITE):
        selected_on: list[tuple[int, ...]] = []
        result = heldout.run_suite(suite, quick=False, out_dir=str(tmp_path))
        assert result["config"]["seeds"] == list(range(10))
        assert selected_on == [suite.select_seeds] and result["config"]["select_seeds"] == list(suite.select_seeds)
        assert all(len(v[10]) == 10 for task in result["results"].values() for v in task.values())
        text = (tmp_path / suite.section_file).read_text()
        assert (
            "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in text
            and f"over seed(s) {', '.join(map(str, suite.select_seeds))} (" in text
        )


@pytest.mark.slow
def test_quick_weight_averaging_reports_the_differences_of_its_runs(tmp_path) -> None:
    from benchmarks import weight_averaging as averaging

    assert run.main(["--quick", "--only", "weight_averaging", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"][averaging.NAME]
    assert "error" not in result, result.get("error")
    accuracy, keys = result["accuracy"], list(averaging.QUICK_TASKS)
    rows = [averaging.PLAIN, *(averaging.row(d) for d in averaging.DECAYS)]
    assert list(accuracy) == keys and all(list(accuracy[k]) == rows for k in keys)
    for key in keys:  # one seed: each paired difference is the difference itself
        for name in rows[1:]:
            assert result["paired"][key][name][0] == pytest.approx(accuracy[key][name][0] - accuracy[key][rows[0]][0])
        assert str(result["chosen_lr"][key]) in result["validation"][key][averaging.FALLBACK]
    for name in rows[1:]:
        mean = statistics.fmean(result["paired"][k][name][0] for k in keys)
        assert result["mean_over_tasks"][name] == pytest.approx(mean)
    section = (tmp_path / averaging.SECTION_FILE).read_text()
    assert "not the report" in section and result["targets"] == {}
    for key in keys:
        assert f"| {key} (`" in section and f"| {result['steps_per_run'][key]} |" in section
