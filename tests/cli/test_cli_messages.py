"""What the real ``lit-transfer`` command says: the progress bar's version, unknown config keys named per file, the
allowed values of an option, and the data messages in the user's spelling with a sentence last.

All commands run at once (each a subprocess of the console script) in one folder with photo-like files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from cli_helpers import RECIPES
from PIL import Image

from lit_transfer.cli.config_keys import check_config_keys, top_level_keys
from lit_transfer.cli.recipes import shipped_recipes

LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
DEFAULTS = ("--config", str(RECIPES / "defaults.yaml"))
PHOTOS = ("--data", "ImageFolderDataModule", "--data.num_workers", "0", "--data.image_size", "32")
TINY = ("--model.backbone", "test_resnet", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")

CASES = {
    "progress-bar": ("fit", *DEFAULTS, *TINY, "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=true"),
    "config-keys": ("fit", *DEFAULTS, "--config", str(RECIPES / "linear_probe.yaml"), "--config", "bad.yaml"),
    "rule": ("lr-find", *DEFAULTS, "--rule", "steepest"),
    "model-lr-flag": ("fit", *DEFAULTS, "--model.learning_rate", "0.1"),
    "bad-image-flags": ("fit", *DEFAULTS, *PHOTOS, "--data.root", "photos", *TINY),
    "no-images": ("fit", *DEFAULTS, *PHOTOS, "--data.root", "no_images"),
    "csv-missing-file": (
        "fit",
        *DEFAULTS,
        "--data",
        "CSVDataModule",
        "--data.train_csv",
        "table/train.csv",
        "--data.label_column",
        "label",
    ),
}


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), (value, 255 - value, 90)).save(path)


def _prepare(cwd: Path) -> None:
    for name in ("cat", "dog"):
        for i in range(4):
            _jpeg(cwd / "photos" / "train" / name / f"{i}.jpg", 50 * i)
        (cwd / "no_images" / "train" / name).mkdir(parents=True)
        (cwd / "no_images" / "train" / name / "notes.txt").write_text("not an image")
    (cwd / "photos" / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _jpeg(cwd / "table" / "a.jpg", 10)
    (cwd / "table" / "train.csv").write_text("path,label\na.jpg,cat\nmissing.jpg,dog\n")
    bad = {"model": {"init_args": {"learning_rate": 0.01, "backbon": "resnet18"}}, "trainer": {"max_epoch": 3}}
    (cwd / "bad.yaml").write_text(yaml.safe_dump(bad))


def _run(cwd: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(LIT_TRANSFER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("messages")
    _prepare(cwd)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(_run, cwd, args) for key, args in CASES.items()}
    return {key: future.result() for key, future in futures.items()}


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stderr.strip().splitlines()[-1]


def test_the_progress_bar_shows_the_run_version(ran: dict) -> None:
    result = ran["progress-bar"]
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # TQDM writes `v_num=0`, Rich (Lightning's bar where rich is installed) `v_num: 0`
    assert re.search(r"v_num(=|: )0\b", output) and not re.search(r"v_num(=|: )on_", output), output[-2000:]


def test_unknown_config_keys_are_all_named_with_their_file(ran: dict) -> None:
    result = ran["config-keys"]
    last = _last_line(result)
    assert last.startswith("3 unknown keys in the --config files above")
    text = result.stderr
    assert "bad.yaml (the 3rd --config):" in text
    assert "`model.init_args.learning_rate`" in text and "`model.init_args.optimizer.init_args.lr`" in text
    assert "Did you mean `model.init_args.backbone`?" in text
    assert "`trainer.max_epoch`: not an argument of the Trainer. Did you mean `trainer.max_epochs`" in text


def test_allowed_values_in_plain_words(ran: dict) -> None:
    assert _last_line(ran["rule"]) == "`--rule` takes one of: valley, steep, minimum; got 'steepest'."
    assert "typing.Literal" not in ran["rule"].stderr


def test_hints_spell_flags_when_flags_were_typed(ran: dict) -> None:
    assert "`--model.optimizer.init_args.lr`" in _last_line(ran["model-lr-flag"])
    last = _last_line(ran["bad-image-flags"])
    assert "`--data.on_bad_image skip`" in last and "on_bad_image='skip'" not in ran["bad-image-flags"].stderr


def test_data_messages_end_on_a_sentence_and_name_the_extensions(ran: dict) -> None:
    last = _last_line(ran["csv-missing-file"])
    assert last.startswith("Fix the path(s) above in 'table/train.csv'") and last.endswith("rows.")
    assert "missing.jpg" in ran["csv-missing-file"].stderr
    last = _last_line(ran["no-images"])
    assert "looked for .jpg, .jpeg, .png" in last and "*.png" not in last


@pytest.fixture(scope="module")
def fit_keys() -> set[str]:
    """The top-level keys of the real ``fit`` parser."""
    from lit_transfer.cli import TransferCLI

    holder: dict = {}

    class Capture(TransferCLI):
        def parse_arguments(self, parser, args):  # type: ignore[no-untyped-def]
            holder["keys"] = top_level_keys(self._subcommand_parsers["fit"])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Capture(args=["fit"])
    return holder["keys"]


@pytest.mark.parametrize("recipe", sorted(shipped_recipes()))
def test_no_recipe_key_is_reported_unknown(recipe: str, fit_keys: set[str]) -> None:
    """The key check speaks only after a failed parse; on the shipped recipes it must find nothing to say."""
    assert {"trainer", "model", "data", "ckpt_path", "seed_everything"} <= fit_keys
    check_config_keys(["fit", *DEFAULTS, "--config", str(shipped_recipes()[recipe])], fit_keys)
