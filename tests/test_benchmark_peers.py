"""The peers benchmark: its interleaving, learning-rate choice, time to target and paired differences, and a quick run
whose table and figures must follow from the curves it wrote."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from benchmarks import common, peer_recipes, peers, run
from benchmarks.peer_recipes import Curve, Setting

pytestmark = pytest.mark.usefixtures("restored_process_state")  # the suite quiets its process


def test_rounds_rotate_the_method_order_and_run_every_lr_on_the_rounds_seed() -> None:
    calls: list[tuple[str, int, float]] = []

    def method(label: str) -> peers.Method:
        def train(setting: Setting) -> Curve:
            calls.append((label, setting.seed, setting.lr))
            return Curve([1.0], [50.0], 40.0)

        return peers.Method(label, train, peer=label != "c")

    available = [method(n) for n in "abc"]
    curves = peers.train_all(available, Path("w.safetensors"), (1e-3, 1e-2), (7, 8), epochs=1)
    assert calls == [
        *[("a", 7, 1e-3), ("b", 7, 1e-3), ("c", 7, 1e-3), ("a", 7, 1e-2), ("b", 7, 1e-2), ("c", 7, 1e-2)],
        *[("b", 8, 1e-3), ("c", 8, 1e-3), ("a", 8, 1e-3), ("b", 8, 1e-2), ("c", 8, 1e-2), ("a", 8, 1e-2)],
    ]
    assert set(curves) == {"a", "b", "c"} and all(set(by_lr[1e-3]) == {7, 8} for by_lr in curves.values())


def test_the_lr_is_chosen_by_mean_final_validation_accuracy() -> None:
    curves = {
        "m": {
            1e-3: {0: Curve([1.0, 2.0], [90.0, 60.0], 99.0), 1: Curve([1.0, 2.0], [10.0, 70.0], 99.0)},
            1e-2: {0: Curve([1.0, 2.0], [10.0, 66.0], 0.0), 1: Curve([1.0, 2.0], [10.0, 66.0], 0.0)},
        }
    }
    assert peers.choose_lrs(curves) == {"m": 1e-2}  # final epoch, mean over seeds; the test scores play no part


def test_time_to_target_is_a_ratio_to_the_fastest_peer_in_the_round() -> None:
    runs = {
        "peer a": {0: Curve([2.0, 4.0, 6.0], [50.0, 80.0, 100.0])},
        "peer b": {0: Curve([1.0, 3.0, 5.0], [50.0, 60.0, 95.0])},
        "ours": {0: Curve([1.0, 2.0, 3.0], [90.0, 95.0, 96.0])},
        "slow": {0: Curve([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])},
    }
    [round_] = peers.ratios(runs, ["peer a", "peer b"])["rounds"]
    assert round_["target"] == pytest.approx(90.0)  # 90 % of the best final (peer a's 100)
    assert round_["seconds"]["peer a"] == 6.0 and round_["seconds"]["peer b"] == 5.0
    assert round_["ratio"]["ours"] == pytest.approx(1.0 / 5.0) and round_["ratio"]["peer b"] == 1.0
    assert math.isnan(round_["ratio"]["slow"])  # never reached


def test_paired_difference_and_its_standard_error() -> None:
    mean, error = peers.paired([90.0, 92.0, 94.0], [89.0, 89.0, 89.0])
    assert mean == pytest.approx(3.0) and error == pytest.approx(2.0 / math.sqrt(3))  # diffs 1, 3, 5: std 2
    assert peers.paired([1.0], [0.0]) == (1.0, 0.0)


def test_fastai_row_is_skipped_with_its_reason_when_fastai_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastai.vision.learner", None)  # an environment without fastai
    available, skipped = peers.methods()
    assert peers.FASTAI not in available and peers.TIMM in available and peers.AUTO in available
    assert "fastai is not installed" in skipped[peers.FASTAI.label] and "[peers]" in skipped[peers.FASTAI.label]


def test_every_peer_reads_the_quick_start_recipes_data() -> None:
    data = peer_recipes.datamodule(seed=3)
    settings = peer_recipes.recipe()["data"]["init_args"]
    assert data.classes == settings["classes"] and data.batch_size == settings["batch_size"] == 16
    assert len(data.train_dataset) == settings["shots_per_class"] * len(settings["classes"])
    assert data.augments_training


@pytest.mark.slow
def test_quick_peers_table_follows_its_curves(tmp_path: Path) -> None:
    assert run.main(["--quick", "--only", "peers", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["results"]["peers"]
    assert "error" not in result, result.get("error")
    assert result["targets"] == {}  # quick mode checks no goals
    labels = {m.label for m in peers.METHODS}
    assert set(result["test"]) | set(result["skipped"]) == labels
    assert all(len(v) == 1 and 0 <= v[0] <= 100 for v in result["test"].values())
    for name, by_seed in result["curves"].items():
        curve = by_seed["0"]
        assert len(curve["seconds"]) == len(curve["val_acc"]) == peers.QUICK["epochs"]
        assert curve["seconds"] == sorted(curve["seconds"]) and curve["seconds"][0] > 0
        assert str(result["chosen_lr"][name]) in result["validation"][name]
    # the round's target and ratios are recomputed from the written curves
    [round_] = result["time_to_target"]
    finals = {name: c["0"]["val_acc"][-1] for name, c in result["curves"].items()}
    assert round_["target"] == pytest.approx(peers.TARGET_FRACTION * max(finals.values()))
    reached = {
        name: next((s for s, a in zip(c["0"]["seconds"], c["0"]["val_acc"]) if a >= round_["target"]), None)
        for name, c in result["curves"].items()
    }
    peer_times = [reached[m.label] for m in peers.METHODS if m.peer and reached.get(m.label) is not None]
    for name, seconds in reached.items():
        if seconds is not None and peer_times:
            assert round_["ratio"][name] == pytest.approx(seconds / min(peer_times))
    text = (tmp_path / "results.md").read_text()
    assert "{#peers}" in text and all(label in text for label in labels)
    assert (tmp_path / peers.PLOT_FILE).stat().st_size > 0
    assert common.verdict(True) not in text.split("{#peers}")[1]  # no goal verdicts in quick mode
    assert peers.report(result, quick=True) == (result["markdown"], result["targets"])  # from results.json alone
