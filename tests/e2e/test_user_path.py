"""A user's own photos, end to end, through the real ``lit-transfer`` command in subprocesses.

fit on a folder with a truncated JPEG (refused, nothing left behind) → fit with ``on_bad_image=skip`` →
Ctrl-C → ``fit --ckpt_path last`` (continues from the newest epoch) → ``test --ckpt_path best`` (report in the
run's folder) → ``predict`` (CSV) → ONNX and TorchScript export as ``docs/export.md`` shows → the docs' ONNX
script on the raw files gives the same classes as ``predict``.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import LIT_TRANSFER, photo_args
from photo_fixture import CLASSES, make_photo_folder

REPO = Path(__file__).resolve().parents[2]
TINY = photo_args(image_size=32, batch_size=16)

NOISE = (
    "💡",  # Lightning's litlogger / litmodels advertisements
    "was called without a model",  # Lightning resuming from an on-exception checkpoint by itself
    "there is no last checkpoint",
    "weights_only` was not set",
    "isinstance(treespec, LeafSpec)",
)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _run(cwd: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """The real ``lit-transfer`` command."""
    return _subprocess(cwd, [str(LIT_TRANSFER), *args], timeout)


def _python(cwd: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """``python`` with the suite's interpreter, as a user runs a script or ``python -c``."""
    return _subprocess(cwd, [sys.executable, *args], timeout)


def _subprocess(cwd: Path, command: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _restore_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it (a background job inherits SIGINT as ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _checkpoints(cwd: Path) -> list[Path]:
    return sorted(cwd.rglob("*.ckpt"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("user")
    make_photo_folder(cwd / "photos")
    return cwd


def test_bad_image_is_refused_in_a_few_lines_and_leaves_nothing(workdir: Path) -> None:
    result = _run(workdir, "fit", *TINY, "--trainer.max_epochs", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 8, result.stderr
    assert (
        "broken.jpg" in result.stderr and "`--data.on_bad_image skip`" in lines[-1]
    )  # the flag spelling the user typed
    assert "Traceback" not in result.stderr
    assert _checkpoints(workdir) == []  # no on_exception.ckpt for an error before training: nothing to hijack


@pytest.fixture(scope="module")
def interrupted(workdir: Path) -> dict[str, object]:
    """A long fit interrupted with Ctrl-C once epoch 2 has ended."""
    log_path = workdir / "interrupted.log"
    args = [*TINY, "--data.on_bad_image", "skip", "--trainer.max_epochs", "1000"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(LIT_TRANSFER), "fit", *args],
            cwd=workdir,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_restore_sigint,
        )
        deadline = time.monotonic() + 150
        while _newest_epoch(workdir) < 2:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "epoch 2 did not end within 150 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=60)
    [last] = workdir.glob("runs/defaults/lightning_logs/version_*/checkpoints/last.ckpt")
    return {"returncode": returncode, "log": log_path.read_text(), "run": last.parent.parent}


def _newest_epoch(workdir: Path) -> int:
    for last in workdir.glob("runs/defaults/lightning_logs/version_*/checkpoints/last.ckpt"):
        try:
            return int(torch.load(last, weights_only=True, map_location="cpu")["epoch"])
        except (RuntimeError, EOFError, KeyError):  # being written
            pass
    return -1


def test_ctrl_c_exits_non_zero_and_keeps_the_state_in_the_run(workdir: Path, interrupted: dict) -> None:
    assert interrupted["returncode"] != 0
    run: Path = interrupted["run"]
    saved = run / "checkpoints" / "on_exception.ckpt"
    assert saved.is_file() and str(saved.relative_to(workdir)) in str(interrupted["log"])
    assert not list(workdir.glob("*.ckpt"))  # nothing in the working directory
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    exception = torch.load(saved, weights_only=True)
    assert exception["global_step"] >= last["global_step"]


@pytest.mark.slow  # over ~15 s on 2 cores
def test_resume_last_then_test_predict_and_export(workdir: Path, interrupted: dict) -> None:
    run: Path = interrupted["run"]
    newest_epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    stop = newest_epoch + 3
    resumed = _run(
        workdir, "fit", *TINY, "--data.on_bad_image", "skip", "--trainer.max_epochs", str(stop), "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path at" in resumed.stderr
    for noise in NOISE:
        assert noise not in resumed.stderr + interrupted["log"], noise
    assert f"Using {(run / 'checkpoints' / 'last.ckpt').relative_to(workdir)};" in resumed.stderr
    second = run.parent / f"version_{int(run.name.split('_')[1]) + 1}"
    final = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["epoch"] == stop - 1  # continued from the newest epoch, to the new end
    lrs = [
        float(row["lr-AdamW/head"])
        for row in csv.DictReader((second / "metrics.csv").open())
        if row.get("lr-AdamW/head")
    ]
    assert lrs and min(lrs) > 0  # the extra epochs train

    tested = _run(workdir, "test", *TINY, "--data.on_bad_image", "skip", "--ckpt_path", "best")
    assert tested.returncode == 0, tested.stderr[-3000:]
    best_run = Path(re.search(r"Using (\S+)/checkpoints/best\.ckpt", tested.stderr).group(1))
    report = workdir / best_run / "test"
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "epochs.csv"):
        assert (report / name).is_file(), name
    assert str(best_run / "test") in tested.stderr  # the command says where
    for noise in (*NOISE, "Please add the following callbacks", "The dirpath has changed"):
        assert noise not in tested.stderr, noise
    assert "test_acc" in tested.stdout and "lr-" not in tested.stderr.split("Run summary (test)")[1].split("\n")[1]
    assert not (second.parent / f"version_{int(second.name.split('_')[1]) + 1}").exists()  # no new run folder

    best = workdir / best_run / "checkpoints" / "best.ckpt"
    predicted = _run(workdir, "predict", *TINY, "--ckpt_path", str(best))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    predictions = workdir / best_run / "predict" / "predictions.csv"
    assert str(predictions.relative_to(workdir)) in predicted.stderr or str(predictions) in predicted.stderr
    rows = list(csv.DictReader(predictions.open()))
    assert len(rows) == 6 and {r["predicted"] for r in rows} <= set(CLASSES)

    export = _python(
        workdir,
        "-c",
        "from lit_transfer.export import export_onnx, export_torchscript;"
        f"export_onnx({str(best)!r}, 'model.onnx'); export_torchscript({str(best)!r}, 'model.pt')",
    )
    assert export.returncode == 0, export.stderr[-3000:]
    scripted = torch.jit.load(str(workdir / "model.pt"))
    assert scripted(torch.zeros(1, 3, 32, 32)).shape == (1, len(CLASSES))  # the trained input size

    script = _docs_onnx_script()
    (workdir / "predict_onnx.py").write_text(script)
    files = [r["file"] for r in rows]
    onnx_run = _python(workdir, "predict_onnx.py", *files, timeout=120)
    assert onnx_run.returncode == 0, onnx_run.stderr[-3000:]
    onnx_classes = dict(line.rsplit(" ", 1) for line in onnx_run.stdout.strip().splitlines())
    assert onnx_classes == {r["file"]: r["predicted"] for r in rows}


def _docs_onnx_script() -> str:
    """The ONNX block of docs/export.md, exactly as a user copies it."""
    page = (REPO / "docs" / "export.md").read_text()
    section = page.split("## Running the ONNX file", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow  # over ~15 s on 2 cores
def test_auto_on_photos_says_what_it_decided_and_why(tmp_path: Path) -> None:
    """`freeze: auto` on a photo folder: too few validation photos for the trials is the stated default, and so is a
    run too short to pay for them; allowed both, the trials run on the photos and score them on the validation
    folder."""
    make_photo_folder(tmp_path / "photos")
    common = [*TINY, "--data.on_bad_image", "skip", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0"]
    few = _run(tmp_path, "fit", *common, "--model.freeze", "auto", "--trainer.default_root_dir", "few")
    assert few.returncode == 0, few.stderr[-3000:]
    [line] = [x for x in (few.stdout + few.stderr).splitlines() if x.startswith("AutoFreeze:")]
    assert "no trials; chose all groups (default: " in line and "fewer than min_val_samples=20" in line
    short = _run(tmp_path, "fit", *common, "--model.freeze", "{policy: auto, min_val_samples: 4}")
    assert short.returncode == 0, short.stderr[-3000:]
    [line] = [x for x in (short.stdout + short.stderr).splitlines() if x.startswith("AutoFreeze:")]
    assert "no trials; chose all groups (default: the trials would train" in line and "max_trial_share=0.25" in line
    unbounded = "{policy: auto, min_val_samples: 4, max_trial_share: null}"  # trials however short the run
    allowed = _run(tmp_path, "fit", *common, "--model.freeze", unbounded)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    [line] = [x for x in (allowed.stdout + allowed.stderr).splitlines() if x.startswith("AutoFreeze:")]
    assert "validation loss on " in line and "linear probe" in line and "all groups" in line


@pytest.mark.slow  # over ~15 s on 2 cores
def test_probe_views_on_photos_fits_the_head_first_and_says_so(tmp_path: Path) -> None:
    """`--model.probe_views` through the command on a photo folder (a truncated JPEG skipped, worker processes)."""
    make_photo_folder(tmp_path / "photos")
    args = [*TINY, "--data.on_bad_image", "skip", "--data.num_workers", "2", "--trainer.max_epochs", "1"]
    run = _run(tmp_path, "fit", *args, "--model.probe_views", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    [line] = [x for x in (run.stdout + run.stderr).splitlines() if x.startswith("HeadProbe:")]
    assert re.search(r"fitted to \d+ features \(2 view\(s\) of \d+ training samples\)", line), line
    balanced = _run(tmp_path, "fit", *args, "--model.probe_views", "2", "--data.balanced_sampling", "true")
    assert balanced.returncode == 0, balanced.stderr[-3000:]
    assert "training samples, weighted as the sampler draws them)" in balanced.stdout + balanced.stderr
    refused = _run(tmp_path, "fit", *args, "--model.probe_views", "-1")
    assert refused.returncode != 0
    assert "`probe_views` must be an integer >= 0" in refused.stderr
    assert "Traceback" not in refused.stderr
