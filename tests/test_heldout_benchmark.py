"""The held-out benchmark suite: its tasks differ from the development suite's, its corruptions are fixed per scan,
its paired statistics are the textbook ones, and its quick run's verdicts are the comparisons of its own figures."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import common, heldout, heldout_tasks, run, shift_tasks

pytestmark = pytest.mark.usefixtures("restored_process_state")  # the suite quiets its process


def test_heldout_tasks_are_new_shifts_on_three_new_backbone_families() -> None:
    tasks = heldout_tasks.TASKS
    assert len(tasks) >= 4 and {t.level for t in tasks} == {"input", "output"}
    backbones = {t.backbone for t in tasks}
    assert common.BACKBONE not in backbones
    kinds = {"resnet": "ResNet", "mobilenet": "MobileNet", "efficientnet": "MobileNet", "convnext": "ConvNeXt"}
    families = {next(kind for prefix, kind in kinds.items() if name.startswith(prefix)) for name in backbones}
    assert families == {"ResNet", "MobileNet", "ConvNeXt"}, families
    development = {(t.source_classes, t.target_classes) for t in shift_tasks.TASKS}
    for task in tasks:
        assert not task.inverted, task.key  # the development suite's input shift
        if task.level == "output":
            assert (task.source_classes, task.target_classes) not in development, task.key
            assert not set(task.source_classes) & set(task.target_classes), task.key
        else:
            assert task.source_classes == task.target_classes and task.corruption in heldout_tasks.CORRUPTIONS


@pytest.mark.parametrize("corruption", heldout_tasks.CORRUPTIONS)
def test_a_corruption_changes_every_split_alike_and_keeps_the_draws(corruption: str) -> None:
    plain = shift_tasks.ShiftTask("c", "clean", (0, 1, 2), (0, 1, 2), False).datamodule(3, seed=5)
    one = heldout_tasks.CorruptedDigits(corruption, classes=(0, 1, 2), shots_per_class=3, seed=5)
    other = heldout_tasks.CorruptedDigits(corruption, classes=(0, 1, 2), shots_per_class=3, seed=6)
    (a, labels_a, splits_a), (b, labels_b, splits_b) = plain._splits(), one._splits()
    assert splits_a == splits_b and (labels_a == labels_b).all()
    assert b.dtype == np.uint8 and b.shape == a.shape and (a != b).any(axis=(1, 2)).mean() > 0.9
    assert (other._splits()[0] == b).all()  # the corruption of a scan does not depend on the run's seed
    if corruption == "rot90":
        assert (b == np.rot90(a, axes=(1, 2))).all()
    with pytest.raises(ValueError, match="corruption"):
        heldout_tasks.CorruptedDigits("sepia")


def test_paired_difference_and_the_seed_knob(monkeypatch) -> None:
    diff, error = heldout.paired([90.0, 80.0, 85.0], [88.0, 81.0, 82.0])
    assert diff == pytest.approx(4.0 / 3) and error == pytest.approx(statistics.stdev([2, -1, 3]) / math.sqrt(3))
    assert math.isnan(heldout.paired([1.0], [0.0])[1]) and heldout.fmt_paired((0.5, math.nan)) == "+0.5"
    monkeypatch.delenv(heldout.SEEDS_ENV, raising=False)
    assert heldout.seeds_from_env() == heldout.SEEDS == (0, 1, 2, 3, 4)
    monkeypatch.setenv(heldout.SEEDS_ENV, "8")
    assert heldout.seeds_from_env() == tuple(range(8))
    monkeypatch.setenv(heldout.SEEDS_ENV, "0")
    with pytest.raises(ValueError, match=heldout.SEEDS_ENV):
        heldout.seeds_from_env()


@pytest.mark.slow
def test_quick_heldout_verdicts_follow_its_numbers(tmp_path) -> None:
    assert run.main(["--quick", "--only", "heldout", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["heldout"]
    assert "error" not in result, result.get("error")
    runs, keys, shots = result["results"], [t.key for t in heldout_tasks.TASKS], str(result["config"]["shots"][-1])
    assert list(runs) == keys and all(set(runs[k]) == set(runs[keys[0]]) for k in keys)
    assert {shift_tasks.FALLBACK, heldout.AUTO, heldout.FULL} <= set(runs[keys[0]])
    assert all(len(v[shots]) == 1 and 0 <= v[shots][0] <= 100 for task in runs.values() for v in task.values())
    for key, by_policy in result["chosen_lr"].items():  # the lr each policy ran with is one it was scored with
        assert all(str(lr) in result["validation"][key][policy] for policy, lr in by_policy.items())
    assert len({by_policy[heldout.AUTO] for by_policy in result["chosen_lr"].values()}) == 1
    acc = {k: {p: v[shots][0] for p, v in task.items()} for k, task in runs.items()}
    fixed = [p for p in acc[keys[0]] if p != heldout.AUTO]
    best = {k: max(fixed, key=lambda p, k=k: acc[k][p]) for k in keys}
    assert {k: result["paired"][k]["best_fixed"] for k in keys} == best
    wall = result["run_seconds"]
    ratios = {k: wall[k][heldout.AUTO][0] / wall[k][shift_tasks.FALLBACK][0] for k in keys}
    average = {p: statistics.fmean(acc[k][p] for k in keys) for p in acc[keys[0]]}
    expected = [
        all(acc[k][heldout.AUTO] - acc[k][best[k]] >= -heldout.NEAR for k in keys),
        all(acc[k][heldout.AUTO] >= acc[k][heldout.FULL] for k in keys),
        all(average[heldout.AUTO] > average[p] for p in fixed),
        all(ratios[k] <= heldout.TIME_RATIO for k in keys),
    ]
    assert list(result["targets"].values()) == expected
    assert (tmp_path / heldout.DECISIONS_FILE).read_text().count("AutoFreeze:") == len(keys)
    text = (tmp_path / "results.md").read_text()
    assert "{#heldout}" in text and "not the held-out result" in text
    for target, ok in zip(result["targets"], expected):
        assert f"| heldout | {target} | {common.verdict(ok)} |" in text


def test_the_probe_views_rows_differ_from_their_pairs_by_the_probe_alone() -> None:
    from benchmarks import heldout_e_probe_views as probe

    rows = probe.table(heldout.EPOCHS)
    assert len(rows) == 2 * len(probe.pairs(heldout.EPOCHS)) == 4
    for plain, probed in probe.pairs(heldout.EPOCHS).items():
        assert rows[probed] == {**rows[plain], "probe_views": probe.VIEWS} and "probe_views" not in rows[plain]
    assert shift_tasks.FALLBACK in rows
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "quickstart.yaml").read_text())
    assert recipe["model"]["init_args"]["probe_views"] == probe.VIEWS  # the setting the recipe ships


@pytest.mark.slow
def test_quick_probe_views_verdicts_follow_its_numbers(tmp_path) -> None:
    from benchmarks import heldout_e_probe_views as probe

    assert run.main(["--quick", "--only", "heldout_e_probe_views", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"][probe.NAME]
    assert "error" not in result, result.get("error")
    accuracy, keys = result["accuracy"], list(probe.QUICK_TASKS)
    assert list(accuracy) == keys and result["config"]["seeds"] == list(heldout.QUICK["seeds"])
    pairs = result["config"]["pairs"]
    expected = []
    for plain, probed in pairs.items():
        diffs = {k: accuracy[k][probed][0] - accuracy[k][plain][0] for k in keys}  # one seed: the difference itself
        assert {k: result["paired"][k][plain][0] for k in keys} == pytest.approx(diffs)
        expected += [statistics.fmean(diffs.values()) >= 0, all(d >= -heldout.NEAR for d in diffs.values())]
    for key, by_row in result["chosen_lr"].items():  # the lr each row ran with is one it was scored with
        assert all(str(lr) in result["validation"][key][row] for row, lr in by_row.items())
    assert list(result["targets"].values()) == expected
    text = (tmp_path / "results.md").read_text()
    assert "{#heldout-e-probe-views}" in text and "not the held-out result" in text
    for target, ok in zip(result["targets"], expected):
        assert f"| {probe.NAME} | {target} | {common.verdict(ok)} |" in text
