"""The benchmark suite: helpers, the CLI, and the smallest real benchmark in quick mode, whose verdicts must be the
comparisons of its own figures with its targets."""

from __future__ import annotations

import json

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
        (folder / "results.json").write_text(json.dumps({"quick": False, "results": results}))
    (a / "shift_auto_decisions.md").write_text("decided")
    (a / "results.md").write_text("a's own page, not copied")
    assert run.main(["--merge", f"{a},{b}", "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())["results"]
    assert list(merged) == ["overhead", "shift", "heldout"]  # the suite's order; the others' latest kept
    assert merged["shift"]["markdown"] == "### The new shift section"
    text = (out / "results.md").read_text()
    assert "The old overhead section" in text and "The new shift section" in text and "old shift" not in text
    assert "| shift | new shift goal | MISS |" in text and "| heldout | heldout goal | PASS |" in text
    assert (out / "shift_auto_decisions.md").read_text() == "decided"
    with pytest.raises(SystemExit):  # a quick run does not merge into full results
        run.main(["--merge", str(a), "--out", str(out), "--quick"])
    with pytest.raises(SystemExit):
        run.main(["--merge", str(tmp_path / "missing"), "--out", str(out)])


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


def test_shift_input_task_inverts_every_scan_and_keeps_the_splits() -> None:
    from benchmarks import shift_tasks

    output, inputs = shift_tasks.TASKS
    assert output.target_classes == common.TARGET_CLASSES and not output.inverted
    assert inputs.source_classes == inputs.target_classes == tuple(range(10)) and inputs.inverted
    clean = output.datamodule(5, seed=3)
    inverted = shift_tasks.InvertedDigits(classes=output.target_classes, shots_per_class=5, seed=3)
    (a, labels_a, splits_a), (b, labels_b, splits_b) = clean._splits(), inverted._splits()
    assert splits_a == splits_b and (labels_a == labels_b).all() and (a.astype(int) + b == 255).all()
    assert isinstance(inputs.datamodule(1, seed=0), shift_tasks.InvertedDigits)
    table, missing = shift_tasks.policies(12)
    assert len(table) + len(missing) == 9 and not set(table) & set(missing)
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
def test_quick_heldout_lr_finder_figures_and_verdicts_follow_its_runs(tmp_path) -> None:
    from benchmarks import heldout_lr_finder

    assert run.main(["--quick", "--only", "heldout_lr_finder", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["heldout_lr_finder"]
    assert "error" not in result, result.get("error")
    keys = list(heldout_lr_finder.QUICK["tasks"])
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
    section = (tmp_path / heldout_lr_finder.SECTION_FILE).read_text()
    assert section.startswith(heldout_lr_finder.GENERATED) and "{#heldout-lr-finder}" not in section
    assert "not the held-out result" in section and f"{result['tasks'][keys[0]]['paired'][0]:+.1f}" in section
    text = (tmp_path / "results.md").read_text()
    for target, ok in zip(result["targets"], [near, fast]):
        assert f"| heldout_lr_finder | {target} | {common.verdict(ok)} |" in text
