"""The offline quick start does what its docstring and the README promise.

`--fast` runs every step in seconds: the files it names exist, the table has a row per run and seed, the seed summary
is printed for several seeds, and the baselines really train on the recipe's 50 images with the recipe's budget and
the package defaults. The full run (slow) gives test metrics in range and a source model that learned its task;
rankings between settings are a matter of several seeds (the benchmark suite's transfer table), not of this test.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from lit_transfer import TransferClassifier
from lit_transfer.demo import quickstart
from lit_transfer.demo.quickstart import BASELINES, RECIPE_NAME, main

SOURCE = "source: scratch on digits 0-4"


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`--fast --baselines --seeds 0 1`, with the CLI of every target run kept for inspection."""
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    clis: list[tuple[str, int, Any]] = []
    real = quickstart.fit_and_test

    def keep(name: str, args: Any, seed: int = 0) -> Any:
        result, cli = real(name, args, seed)
        clis.append((name, seed, cli))
        return result, cli

    argv = ["--fast", "--baselines", "--seeds", "0", "1", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quickstart, "fit_and_test", keep)
        patch.setattr(sys, "argv", [quickstart.__file__, *argv])  # as run from a shell, whatever runs the tests
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = main(argv)
    warned = [str(w.message) for w in caught]
    return {"out": out, "rows": rows, "text": printed.getvalue(), "clis": clis, "warned": warned}


def test_the_quick_start_does_not_warn_about_its_own_command_line(fast_run: dict[str, Any]) -> None:
    """It passes each run's whole command line to the CLI while its own options are in ``sys.argv`` (the fixture's)."""
    assert not [w for w in fast_run["warned"] if "args parameter is intended" in w]


def test_rows_and_table_cover_every_run_and_seed(fast_run: dict[str, Any]) -> None:
    rows, text = fast_run["rows"], fast_run["text"]
    target_names = [RECIPE_NAME, *BASELINES]
    assert [(r.name, r.seed) for r in rows] == [(SOURCE, 0)] + [(n, s) for s in (0, 1) for n in target_names]
    table = text[text.index("Results (held-out test images, final weights)") :].splitlines()
    for row in rows:
        assert 0.0 <= row.metrics["test_acc"] <= 1.0 and 0.0 <= row.metrics["test_f1"] <= 1.0, row
        line = next(line for line in table if line.startswith(row.name) and line.split()[-4] == str(row.seed))
        assert f"{row.metrics['test_acc']:.2%}" in line and f"{row.metrics['test_f1']:.3f}" in line
    assert "Quick start finished" in text


def test_several_seeds_print_mean_and_std_per_setting(fast_run: dict[str, Any]) -> None:
    rows, text = fast_run["rows"], fast_run["text"]
    summary = text[text.index("Mean ± std over seeds") :].split("\n\n")[0].splitlines()
    for name in (RECIPE_NAME, *BASELINES):
        accs = torch.tensor([r.metrics["test_acc"] for r in rows if r.name == name], dtype=torch.float64)
        line = next(line for line in summary if line.startswith(name))
        found = re.search(r"(\d+\.\d+)% ± (\d+\.\d+)%", line)
        assert found is not None, line
        assert float(found.group(1)) == pytest.approx(100 * float(accs.mean()), abs=0.006)
        assert float(found.group(2)) == pytest.approx(100 * float(accs.std()), abs=0.006)
    assert not any(line.startswith(SOURCE) for line in summary)  # one source run: no spread to show


def test_files_the_quick_start_names_exist(fast_run: dict[str, Any]) -> None:
    out, rows, text = fast_run["out"], fast_run["rows"], fast_run["text"]
    weights = out / "source" / "backbone.safetensors"
    assert weights.is_file() and str(weights) in text
    for recipe in (r for r in rows if r.name == RECIPE_NAME):
        run_dir = Path(str(recipe.log_dir))
        assert run_dir.is_relative_to(out / "target") and str(run_dir) in text
        for name in ("config.yaml", "metrics.csv", "epochs.csv", "learning_curves.png", "confusion_matrix.png"):
            assert (run_dir / name).is_file(), name
        assert list(run_dir.glob("events.out.tfevents.*"))
        assert str(weights) in (run_dir / "config.yaml").read_text()
        last = Path(recipe.checkpoints["last"])
        assert last.is_file() and str(last) in text
        assert TransferClassifier.load_from_checkpoint(last).class_names == ["5", "6", "7", "8", "9"]


def test_baselines_train_on_the_recipe_images_and_budget_with_package_defaults(fast_run: dict[str, Any]) -> None:
    weights = fast_run["out"] / "source" / "backbone.safetensors"
    saved = load_file(str(weights))
    for seed in (0, 1):
        runs = {name: cli for name, s, cli in fast_run["clis"] if s == seed}
        recipe = runs[RECIPE_NAME]
        train_scans = recipe.datamodule.split_indices["train"]
        assert len(train_scans) == 50
        assert recipe.datamodule.augments_training and recipe.model.hparams["layer_decay"] == 0.8
        for name in BASELINES:
            cli = runs[name]
            assert cli.datamodule.split_indices["train"] == train_scans, name  # the same 50 images
            assert cli.datamodule.batch_size == recipe.datamodule.batch_size == 16, name
            assert cli.trainer.max_epochs == recipe.trainer.max_epochs, name
            assert cli.model.hparams["warmup_epochs"] == recipe.model.hparams["warmup_epochs"], name
            assert not cli.datamodule.augments_training, name  # package default: no augmentation
            assert cli.model.hparams["layer_decay"] is None, name
        backbone = {name: runs[name].model.backbone for name in BASELINES}
        trainable = {name: {k for k, p in net.named_parameters() if p.requires_grad} for name, net in backbone.items()}
        everything = {k for k, _ in backbone["naive full fine-tune"].named_parameters()}
        assert trainable["naive full fine-tune"] == trainable["scratch (no transfer)"] == everything
        assert trainable["linear probe"] == {k for k in everything if k.startswith("fc.")}
        stem = next(k for k in saved if k in dict(backbone["linear probe"].named_parameters()))
        probe = dict(backbone["linear probe"].named_parameters())[stem]
        assert torch.equal(probe.detach().cpu(), saved[stem])  # loaded from the source weights, left frozen
        scratch = dict(backbone["scratch (no transfer)"].named_parameters())[stem]
        assert not torch.allclose(scratch.detach().cpu(), saved[stem])  # no transfer
        lrs = {name: max(g["initial_lr"] for g in runs[name].trainer.optimizers[0].param_groups) for name in BASELINES}
        assert lrs == pytest.approx({"naive full fine-tune": 1e-3, "linear probe": 1e-2, "scratch (no transfer)": 1e-3})


@pytest.mark.slow
def test_full_quickstart_metrics_are_in_range(tmp_path: Path) -> None:
    """The run `make quickstart` does: one seed, 30 + 30 epochs, the three baselines."""
    rows = main(["--out", str(tmp_path / "qs")])
    assert [row.name for row in rows] == [SOURCE, RECIPE_NAME, *BASELINES]
    for row in rows:
        assert 0.0 <= row.metrics["test_acc"] <= 1.0 and 0.0 <= row.metrics["test_f1"] <= 1.0, row
    by_name = {row.name: row.metrics["test_acc"] for row in rows}
    assert by_name[SOURCE] > 0.9  # the source model learned digits 0-4
    assert by_name[RECIPE_NAME] > 0.5  # well above chance (0.2) on 5 classes from 10 images each
