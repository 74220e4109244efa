"""The offline quick start: `--fast` in seconds, the full run (slow) beats the naive fine-tune."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_transfer import TransferClassifier
from lit_transfer.quickstart import BASELINES, RECIPE_NAME, main


def test_fast_quickstart_writes_files_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = main(["--fast", "--out", str(tmp_path / "qs")])
    out = capsys.readouterr().out
    assert "Results (held-out test images, final weights)" in out
    assert "source: scratch on digits 0-4" in out and RECIPE_NAME in out
    assert "Quick start finished" in out

    weights = tmp_path / "qs" / "source" / "backbone.safetensors"
    assert weights.is_file()
    recipe = rows[1]
    run_dir = Path(str(recipe.log_dir))
    assert run_dir.is_relative_to(tmp_path / "qs" / "target")
    for name in ("config.yaml", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert str(weights) in (run_dir / "config.yaml").read_text()
    last = Path(recipe.checkpoints["last"])
    assert last.is_file() and str(last) in out
    model = TransferClassifier.load_from_checkpoint(last)
    assert model.class_names == ["5", "6", "7", "8", "9"]
    assert "test_acc" in recipe.metrics and "test_f1" in recipe.metrics


@pytest.mark.slow
def test_full_quickstart_beats_naive_fine_tune(tmp_path: Path) -> None:
    rows = main(["--out", str(tmp_path / "qs")])
    by_name = {row.name: row.metrics["test_acc"] for row in rows}
    assert by_name["source: scratch on digits 0-4"] > 0.95
    assert by_name[RECIPE_NAME] > by_name["naive full fine-tune"]


def test_baselines_use_package_defaults_not_the_recipe_augmentation() -> None:
    for name, overrides in BASELINES.items():
        assert "--data.train_transform=none" in overrides, name
        assert "--model.layer_decay=null" in overrides, name
