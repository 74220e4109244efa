"""Mistakes made on the real ``lit-transfer`` command line: exit status 2, a few lines, the package's sentence last.

Each case runs the console script in a subprocess (all cases at once, they are independent). ``docs/errors.md``
shows every message with the number of lines the command printed; regenerate the page with
``python tests/e2e/test_bad_inputs.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from photo_fixture import make_photo_folder

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
DEFAULTS = ["--config", str(REPO / "recipes" / "defaults.yaml")]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
PHOTOS = ["--data", "ImageFolderDataModule", "--data.root", "photos", "--data.num_workers", "0"]
TINY = ["--model.backbone", "test_resnet", "--data.image_size", "32", "--trainer.max_epochs", "1"]
MAX_LINES = 8
"""What a mistake may print in all: the lines a run prints before it starts (seed, devices), the header, the message."""


@dataclass(frozen=True)
class CliCase:
    id: str
    what: str
    args: tuple[str, ...]
    expect: str


CASES = [
    CliCase(
        "cli-misspelt-model-option",
        "A misspelt model option",
        ("fit", *DEFAULTS, "--model.backbon", "test_resnet"),
        "Did you mean `--model.backbone`?",
    ),
    CliCase(
        "cli-misspelt-key-in-a-config",
        "A misspelt key in a config file",
        ("fit", *DEFAULTS, "--config", "typo.yaml"),
        "Did you mean `trainer.max_epochs`",
    ),
    CliCase(
        "cli-root-on-the-digits",
        "A folder of images given to the digits DataModule",
        ("fit", *DEFAULTS, "--data.root", "photos"),
        "`--data ImageFolderDataModule --data.root path/to/images`",
    ),
    CliCase(
        "cli-missing-root",
        "A data folder that does not exist",
        ("fit", *DEFAULTS, "--data", "ImageFolderDataModule", "--data.root", "nowhere"),
        "does not exist",
    ),
    CliCase(
        "cli-empty-class-folder",
        "An empty class folder",
        ("fit", *DEFAULTS, "--data", "ImageFolderDataModule", "--data.root", "empty_class"),
        "contains no image files",
    ),
    CliCase(
        "cli-bad-image",
        "A truncated image in the data",
        ("fit", *DEFAULTS, *PHOTOS, *TINY, *QUIET),
        "pass `--data.on_bad_image skip` to leave them out",
    ),
    CliCase(
        "cli-tiny-image-size",
        "An image size that is surely a typo",
        ("fit", *DEFAULTS, "--data.image_size", "4"),
        "`image_size`",
    ),
    CliCase(
        "cli-backbone-against-checkpoint",
        "A backbone that differs from the checkpoint's",
        (
            "test",
            *DEFAULTS,
            *PHOTOS,
            "--data.on_bad_image",
            "skip",
            "--ckpt_path",
            "trained.ckpt",
            "--model.backbone",
            "resnet10t",
        ),
        "differs from the backbone of the checkpoint",
    ),
    CliCase(
        "cli-checkpoint-on-other-data",
        "Testing a checkpoint on data with other classes",
        ("test", *DEFAULTS, "--ckpt_path", "trained.ckpt"),
        "Pass the data the model was trained on",
    ),
    CliCase(
        "cli-cache-features-with-augmentation",
        "Cached features asked for with augmented training images",
        (
            "fit",
            *DEFAULTS,
            *("--model.freeze", "linear_probe", "--model.cache_features", "true"),
            *("--data.train_transform", "light", "--trainer.default_root_dir", "refused_runs"),
        ),
        "Set the DataModule's `train_transform: none`, or set `cache_features: false`.",
    ),
    CliCase(
        "cli-missing-checkpoint",
        "A checkpoint path that does not exist",
        ("test", *DEFAULTS, "--ckpt_path", "nope.ckpt"),
        "does not exist",
    ),
    CliCase(
        "cli-no-best-checkpoint",
        "`--ckpt_path best` with no run yet",
        ("test", *DEFAULTS, "--trainer.default_root_dir", "empty_runs", "--ckpt_path", "best"),
        "found no best.ckpt",
    ),
    CliCase(
        "cli-auto-with-layer-decay",
        "`freeze: auto` stacked on a model-level `layer_decay`",
        ("fit", *DEFAULTS, "--model.freeze", "auto", "--model.layer_decay", "0.8"),
        "so it does not stack with `layer_decay` (0.8): unset them (`--model.layer_decay null",
    ),
    CliCase(
        "cli-spawn-unpicklable-callback",
        "A callback that `ddp_spawn` cannot send to its workers",
        (
            "fit",
            *DEFAULTS,
            *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn"),
            *("--trainer.callbacks+=EMAWeightAveraging", "--trainer.default_root_dir", "spawn_runs"),
        ),
        "Use `--trainer.strategy ddp` (it starts each worker as a new process of the same command",
    ),
]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def prepare(cwd: Path) -> None:
    """The files the cases name: a photo folder (with a truncated JPEG), a config with a typo, a checkpoint."""
    make_photo_folder(cwd / "photos", per_class=4, val_per_class=2, test_per_class=2, predict=0)
    (cwd / "typo.yaml").write_text(yaml.safe_dump({"trainer": {"max_epoch": 3}}))
    make_photo_folder(cwd / "empty_class", per_class=2, val_per_class=0, test_per_class=0, predict=0, bad_files=False)
    for image in (cwd / "empty_class" / "train" / "owl").iterdir():
        image.unlink()
    fit = [str(LIT_TRANSFER), "fit", *DEFAULTS, *PHOTOS, *TINY, *QUIET, "--data.on_bad_image", "skip"]
    subprocess.run(
        [*fit, "--trainer.default_root_dir", "trained"],
        cwd=cwd,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    [last] = (cwd / "trained").rglob("last.ckpt")
    last.rename(cwd / "trained.ckpt")


def run_case(case: CliCase, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LIT_TRANSFER), *case.args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the cases run in, with the files they name."""
    cwd = tmp_path_factory.mktemp("cli_errors")
    prepare(cwd)
    return cwd


@pytest.fixture(scope="module")
def results(cases_dir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip([c.id for c in CASES], pool.map(lambda c: run_case(c, cases_dir), CASES)))
    return done


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mistake_exits_2_with_the_message_last(case: CliCase, results: dict) -> None:
    result = results[case.id]
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output[-3000:]
    lines = output.splitlines()
    assert case.expect in lines[-1], output
    assert len(lines) <= MAX_LINES, output
    assert "Traceback" not in output and "Namespace(" not in output
    page = " ".join((REPO / "docs" / "errors.md").read_text().split())
    assert f"`{case.id}`" in page and " ".join(lines[-1].split()) in page, (
        f"docs/errors.md lacks the message of {case.id}: run python tests/e2e/test_bad_inputs.py"
    )
    assert f"{case.id}` — {len(lines)} line" in page, f"the line count of {case.id} changed: regenerate the page"


def docs_section() -> str:  # pragma: no cover - used by test_bad_inputs.write_docs_page, a maintenance script
    """The page's command-line section: each case's last line and how many lines the command printed."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        prepare(cwd)
        items = []
        for case in CASES:
            result = run_case(case, cwd)
            lines = (result.stdout + result.stderr).strip().splitlines()
            shown = "\n".join(lines)
            plural = "s" if len(lines) != 1 else ""
            items.append(
                f"### {case.what}\n\n`{case.id}` — {len(lines)} line{plural}, exit status {result.returncode}\n\n"
                f"```text\n$ lit-transfer {' '.join(_short(a) for a in case.args)}\n{shown}\n```\n"
            )
    return "\n".join(items)


def _short(arg: str) -> str:
    return arg.replace(str(REPO) + "/", "")


def test_a_run_refused_for_its_data_claims_no_run_folder(cases_dir: Path, results: dict) -> None:
    """The model and DataModule are checked before the Trainer exists: no empty ``version_N`` is left behind."""
    assert results["cli-cache-features-with-augmentation"].returncode == 2
    assert not (cases_dir / "refused_runs").exists(), sorted(p.name for p in (cases_dir / "refused_runs").rglob("*"))


def test_a_refused_ddp_spawn_run_leaves_no_run_folder(results: dict, cases_dir: Path) -> None:
    assert results["cli-spawn-unpicklable-callback"].returncode == 2
    assert not (cases_dir / "spawn_runs").exists()  # refused before the run folder is claimed
