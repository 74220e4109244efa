"""The fault matrix: what a real disk, a real cluster and real folders bring, through the real ``lit-transfer``.

Each case runs the console script in a subprocess on photo-like files and checks the exit status, the last line it
prints and the files it leaves: a ``kill -9`` aimed at a checkpoint write with ``$TMPDIR`` on a tmpfs, a disk that
fills up during ``fit``, two fits started together in one folder, SIGTERM to ``fit``/``validate``/``test``/
``predict`` (and to ``fit`` during validation with a weight average), a resume with changed settings, broken
checkpoint and weights files, a symlink loop, the same image in two classes, a non-UTF-8 CSV and a last batch of one
image. Faults are injected with a real tmpfs (the tests run as
root; skipped where mounting is not permitted) and with ``tests/e2e/fault_hooks`` (a ``sitecustomize`` that pauses
or fills the disk at a given ``os.replace``, and callbacks that announce evaluation batches or send SIGTERM).
"""

from __future__ import annotations

import csv
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import LIT_TRANSFER, photo_args
from fault_helpers import tmpfs
from photo_fixture import make_photo_csv, make_photo_folder
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent / "fault_hooks"
TINY = [*photo_args(image_size=16, batch_size=8), "--trainer.default_root_dir", "runs"]
TEMP_FILE = re.compile(r"^\.\w[\w.-]*\.tmp\.")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _hooked(**extra: str) -> dict[str, str]:
    """The environment with the fault hooks on ``PYTHONPATH`` (its ``sitecustomize`` is imported at start-up)."""
    path = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    return _env(PYTHONPATH=path, **extra)


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 240):
    return subprocess.run(
        [str(LIT_TRANSFER), *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def _refused(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit 2, no traceback, the reason last; returns the last line."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = _last_line(result)
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


class Child:
    """A ``lit-transfer`` process whose merged output is read line by line as it comes (no polling, no sleeps)."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(LIT_TRANSFER), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 240) -> str:
        """Block until a line matches ``pattern``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}:\n{self.output[-3000:]}") from None
            if line is None:
                raise AssertionError(f"ended before a line matching {pattern!r}:\n{self.output[-3000:]}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout: float = 180) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=30)
        while not self.lines.empty():
            self.seen.append(self.lines.get() or "")
        return code

    @property
    def output(self) -> str:
        return "".join(self.seen)


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_FILE.match(p.name)]


def _epoch(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["epoch"])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "photos"
    make_photo_folder(root, per_class=6, val_per_class=6, test_per_class=6, predict=24, bad_files=False)
    return root


def _workdir(tmp_path: Path, photos: Path) -> Path:
    (tmp_path / "photos").symlink_to(photos, target_is_directory=True)
    return tmp_path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    """A working folder with one finished 1-epoch fit (``runs/lightning_logs/version_0``)."""
    cwd = _workdir(tmp_path_factory.mktemp("fitted"), photos)
    result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def _copy_run(fitted: Path, tmp_path: Path, photos: Path) -> Path:
    cwd = _workdir(tmp_path, photos)
    shutil.copytree(fitted / "runs", cwd / "runs")
    return cwd


# ------------------------------------------------------------------------------------------------ the disk


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_keeps_the_last_good_one(tmp_path, photos):
    """``$TMPDIR`` on a tmpfs (another filesystem than the run), the process killed while epoch 1's ``last.ckpt``
    is being put in place: epoch 0's file stays whole, nothing went through ``$TMPDIR``, and the resume removes the
    killed writer's temporary file and continues."""
    cwd = _workdir(tmp_path, photos)
    with tmpfs(tmp_path / "tmpdir", "64m") as tmpdir:
        env = _hooked(TMPDIR=str(tmpdir), LT_FAULT_PAUSE_REPLACE="last.ckpt:2")
        child = Child(cwd, ["fit", *TINY, "--trainer.max_epochs", "3"], env)
        child.wait_for(r"FAULT: replacing .*last\.ckpt")
        child.process.kill()  # SIGKILL: no handler, no cleanup
        assert child.finish() == -signal.SIGKILL
        assert [p for p in tmpdir.rglob("*") if p.is_file() and p.stat().st_size > 100_000] == []  # no checkpoint
    checkpoints = cwd / "runs" / "lightning_logs" / "version_0" / "checkpoints"
    assert _epoch(checkpoints / "last.ckpt") == 0  # the previous good copy, whole
    [left] = _temp_files(checkpoints)  # the new one, complete in its temporary file when the kill came
    assert left.name.startswith(".last.ckpt.tmp.")

    resumed = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Removed 1 unfinished temporary file(s)" in resumed.stderr and not _temp_files(cwd / "runs")
    assert _epoch(cwd / "runs" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt") == 1


def test_a_disk_that_fills_up_keeps_the_good_checkpoint_and_reports_the_first_error(tmp_path, photos):
    """The run folder on a 24 MB tmpfs that fills up right after epoch 0's ``last.ckpt``: epoch 1's save fails with
    one line naming the file and the free space, ``last.ckpt`` keeps epoch 0, no empty ``on_exception.ckpt``."""
    cwd = _workdir(tmp_path, photos)
    with tmpfs(cwd / "runs", "24m") as runs:
        env = _hooked(LT_FAULT_FILL_AFTER_REPLACE="last.ckpt:1:200000")
        result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "3", env=env)
        line = _refused(result, "no space left on its filesystem", ".ckpt'", "previous file under that name is kept")
        assert "on_exception" not in line
        checkpoints = runs / "lightning_logs" / "version_0" / "checkpoints"
        assert _epoch(checkpoints / "last.ckpt") == 0
        assert not (checkpoints / "on_exception.ckpt").exists() and not _temp_files(runs)


@pytest.mark.slow
def test_two_fits_started_together_in_one_folder_keep_their_own_runs(tmp_path, photos):
    cwd = _workdir(tmp_path, photos)
    children = [
        Child(cwd, ["fit", *TINY, "--trainer.max_epochs", "1", "--seed_everything", str(s)], _env()) for s in (1, 2)
    ]
    codes = [child.finish(timeout=300) for child in children]
    assert codes == [0, 0], [child.output[-2000:] for child in children]
    runs = sorted((cwd / "runs" / "lightning_logs").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    best = [re.search(r"best checkpoint: (\S+)", child.output).group(1) for child in children]
    assert len(set(best)) == 2  # each run prints its own paths
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert _epoch(run / "checkpoints" / "last.ckpt") == 0
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        assert sorted({row["epoch"] for row in rows}) == ["0"], rows  # one run's rows, not two mixed
        assert config["seed_everything"] in (1, 2)
    seeds = {yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] for run in runs}
    assert seeds == {1, 2}


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.slow
def test_sigterm_ends_fit_with_143_a_resumable_checkpoint_and_the_command(tmp_path, photos):
    cwd = _workdir(tmp_path, photos)
    child = Child(cwd, ["fit", *TINY, "--trainer.max_epochs", "40"], _env())
    child.wait_for(r"LayerFreezing: (\d+)/\1 groups train")  # epoch 1 has started
    child.process.send_signal(signal.SIGTERM)
    assert child.finish() == 128 + signal.SIGTERM, child.output[-3000:]
    saved = cwd / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "on_exception.ckpt"
    assert torch.load(saved, weights_only=True)["global_step"] > 0
    lines = child.output.strip().splitlines()
    assert "stopped by SIGTERM (exit 143)" in lines[-2] and str(saved.relative_to(cwd)) in lines[-2]
    command = shlex.split(lines[-1])
    assert command[:2] == ["lit-transfer", "fit"] and command[-2:] == ["--ckpt_path", str(saved.relative_to(cwd))]


@pytest.mark.slow
def test_sigterm_during_validation_with_an_average_resumes_to_the_uninterrupted_run(tmp_path, photos):
    """``EMAWeightAveraging`` swaps the average into the model while validating: a SIGTERM there must save the
    training weights and the average each in its place, so the resume ends where an uninterrupted run ends."""
    args = ["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.callbacks+=EMAWeightAveraging"]
    args += ["--trainer.callbacks.decay", "0.8"]
    (tmp_path / "straight").mkdir()
    straight = _workdir(tmp_path / "straight", photos)
    assert (result := _run(straight, *args)).returncode == 0, result.stderr[-3000:]

    (tmp_path / "stopped").mkdir()
    cwd = _workdir(tmp_path / "stopped", photos)
    stop = ["--trainer.callbacks+=fault_callbacks.SigtermInValidation", "--trainer.callbacks.epoch", "1"]
    child = Child(cwd, [*args, *stop], _hooked())
    assert child.finish() == 128 + signal.SIGTERM, child.output[-3000:]
    assert "SIGTERM validation epoch 1" in child.output
    checkpoints = cwd / "runs" / "lightning_logs" / "version_0" / "checkpoints"
    assert _epoch(checkpoints / "on_exception.ckpt") == 1
    resumed = _run(cwd, *args, "--ckpt_path", str(checkpoints / "on_exception.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    final = torch.load(max(cwd.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime), weights_only=True)
    expected = torch.load(next((straight / "runs").rglob("last.ckpt")), weights_only=True)
    assert final["global_step"] == expected["global_step"]
    for key in ("state_dict", "current_model_state", "averaging_state"):  # the average, the training weights
        for name, value in expected[key].items():
            assert torch.equal(final[key][name], value), (key, name)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "ddp"])
def test_sigterm_during_the_head_probe_stops_fit_at_once_with_143(tmp_path, photos, processes):
    """The probe's feature pass (4 views of 24 photos: 12 batches) stops at its first batch, all processes together."""
    cwd = _workdir(tmp_path, photos)
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    ddp = ddp if processes > 1 else []
    args = ["fit", *TINY, "--model.probe_views", "4", "--trainer.max_epochs", "3", *ddp]
    child = Child(cwd, [*args, "--trainer.callbacks+=fault_callbacks.SigtermAtTrainStart"], _hooked())
    assert child.finish() == 128 + signal.SIGTERM, child.output[-3000:]
    assert "SIGTERM rank 0" in child.output
    assert "HeadProbe: classifier fitted" not in child.output  # stopped inside the probe, not after it
    last = child.output.strip().splitlines()[-1]
    assert "stopped by SIGTERM (exit 143) before a training step had finished: nothing to resume" in last, last
    assert not list(cwd.rglob("*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_sigterm_ends_an_evaluation_with_143_and_no_complete_looking_files(tmp_path, photos, fitted, subcommand):
    cwd = _copy_run(fitted, tmp_path, photos)
    best = cwd / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    out = best.parent.parent / subcommand
    out.mkdir()
    previous = out / "predictions.csv"
    previous.write_text("file,predicted\nold.jpg,cat\n")  # a previous predict's complete-looking file
    args = [*TINY, "--ckpt_path", str(best), "--trainer.callbacks+=fault_callbacks.Announce"]  # 3 batches of 8
    child = Child(cwd, [subcommand, *args], _hooked())
    child.wait_for(rf"BATCH {subcommand} 0")
    child.process.send_signal(signal.SIGTERM)
    assert child.finish() == 128 + signal.SIGTERM, child.output[-3000:]
    assert "stopped by SIGTERM (exit 143)" in child.output.strip().splitlines()[-1]
    assert not re.search(r"BATCH \w+ 2", child.output)  # it stopped, it did not run to the end
    assert not (out / "epochs.csv").exists() and not _temp_files(out)
    if subcommand == "predict":
        assert not previous.exists()
    else:
        assert previous.exists()  # only predict owns that file


# ------------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize(
    ("flags", "phrases"),
    [
        (["--data.batch_size", "4"], ["`--data.batch_size` asks for a batch size of 4", "trained with 8"]),
        pytest.param(
            ["--model.optimizer.init_args.lr", "0.05"],
            ["`--model.optimizer.init_args.lr`", "lr 0.05 vs 0.001"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["--model.freeze", "linear_probe"],
            ["`--model.freeze`", "linear_probe", "freeze_unfreeze"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["--model.drop_rate", "0.5"],
            ["`--model.drop_rate` asks for `model.drop_rate` 0.5", "trained with 0.0"],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["batch_size", "lr", "freeze", "drop_rate"],
)
def test_a_resume_refuses_settings_that_cannot_change(tmp_path, photos, fitted, flags, phrases):
    cwd = _copy_run(fitted, tmp_path, photos)
    result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "3", "--ckpt_path", "last", *flags)
    line = _refused(result, *phrases, "--model.pretrained")
    assert "version_0/checkpoints/last.ckpt" in line
    assert sorted(p.name for p in (cwd / "runs" / "lightning_logs").iterdir()) == ["version_0"]  # no new run folder


@pytest.mark.slow
def test_a_resume_that_would_train_nothing_is_refused(tmp_path, photos, fitted):
    cwd = _copy_run(fitted, tmp_path, photos)
    result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "1", "--ckpt_path", "last")
    _refused(result, "has finished 1 epoch(s) and `trainer.max_epochs` is 1: this fit would train nothing")
    assert sorted(p.name for p in (cwd / "runs" / "lightning_logs").iterdir()) == ["version_0"]


@pytest.mark.slow
def test_a_resume_applies_a_longer_run_keeps_the_runs_settings_and_records_them(tmp_path, photos, fitted):
    cwd = _copy_run(fitted, tmp_path, photos)
    overlay = cwd / "other.yaml"
    overlay.write_text("data:\n  init_args:\n    batch_size: 4\n")  # a config file, not a flag: the run's value wins
    args = [a for i, a in enumerate(TINY) if "--data.batch_size" not in TINY[i - 1 : i + 1]]  # 8: the fit's own
    result = _run(cwd, "fit", *args, "--config", str(overlay), "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Resuming ")]
    assert "to max_epochs=2 (the run was planned for 1" in line
    assert "data.batch_size=8 (the config says 4)" in line
    run = cwd / "runs" / "lightning_logs" / "version_1"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["init_args"]["batch_size"] == 8 and config["trainer"]["max_epochs"] == 2
    assert config["model"]["init_args"]["freeze"]["policy"] == "freeze_unfreeze"
    assert _epoch(run / "checkpoints" / "last.ckpt") == 1


# ------------------------------------------------------------------------------------------------ broken files


def _break(path: Path, kind: str) -> Path:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "random": os.urandom(4096)}[kind])
    return path


_BROKEN = {"empty": "is empty (0 bytes)", "truncated": "is cut short", "random": "is not a PyTorch"}


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("test", "empty"),
        ("pretrained", "random"),
        pytest.param("fit", "truncated", marks=pytest.mark.slow),
        pytest.param("fit", "empty", marks=pytest.mark.slow),
        pytest.param("fit", "random", marks=pytest.mark.slow),
        pytest.param("test", "truncated", marks=pytest.mark.slow),
        pytest.param("test", "random", marks=pytest.mark.slow),
        pytest.param("pretrained", "empty", marks=pytest.mark.slow),
        pytest.param("pretrained", "truncated", marks=pytest.mark.slow),
    ],
)
def test_a_broken_checkpoint_or_weights_file_is_one_line_with_exit_2(tmp_path, photos, fitted, command, kind):
    cwd = _copy_run(fitted, tmp_path, photos)
    broken = _break(cwd / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt", kind)
    if command == "pretrained":
        result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "1", "--model.pretrained", str(broken))
    else:
        extra = ["--trainer.max_epochs", "3"] if command == "fit" else []
        result = _run(cwd, command, *TINY, *extra, "--ckpt_path", str(broken))
    _refused(result, str(broken), _BROKEN[kind])
    assert "weights_only" not in result.stderr and "pickled" not in result.stderr


@pytest.mark.slow
def test_ckpt_path_last_falls_back_to_the_newest_checkpoint_that_loads(tmp_path, photos, fitted):
    cwd = _copy_run(fitted, tmp_path, photos)
    logs = cwd / "runs" / "lightning_logs"
    shutil.copytree(logs / "version_0", logs / "version_1")
    broken = _break(logs / "version_1" / "checkpoints" / "last.ckpt", "truncated")
    os.utime(broken)  # the newest
    result = _run(cwd, "validate", *TINY, "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Skipping {broken.relative_to(cwd)}: it is cut short" in result.stderr
    assert (
        "Using runs/lightning_logs/version_0/checkpoints/last.ckpt (the newest last.ckpt that loads)" in result.stderr
    )
    _break(logs / "version_0" / "checkpoints" / "last.ckpt", "empty")
    result = _run(cwd, "validate", *TINY, "--ckpt_path", "last")
    _refused(result, "`--ckpt_path last`: no last.ckpt under", "loads", "is empty (0 bytes)", "is cut short")


# ------------------------------------------------------------------------------------------------ real folders


@pytest.mark.slow
def test_a_symlink_loop_in_an_image_folder_is_not_followed(tmp_path, photos):
    cwd = tmp_path
    shutil.copytree(photos, cwd / "photos")
    os.symlink("..", cwd / "photos" / "train" / "cat" / "loop")
    result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "Not following 1 linked folder(s)" in result.stderr
        and "(a folder that contains the link: a loop)" in result.stderr
    )
    assert "ImageFolderDataModule: train 24, val 24" in result.stderr


@pytest.mark.slow
def test_the_same_image_in_two_class_folders_is_refused_naming_both(tmp_path, photos):
    cwd = tmp_path
    shutil.copytree(photos, cwd / "photos")
    os.link(cwd / "photos" / "train" / "dog" / "dog_train_000.jpg", cwd / "photos" / "train" / "cat" / "dog_too.jpg")
    result = _run(cwd, "fit", *TINY, "--trainer.max_epochs", "1")
    _refused(result, "The train split:", "dog_too.jpg", "dog_train_000.jpg", "different targets ('cat' and 'dog')")


def test_a_non_utf8_csv_is_refused_naming_the_file_and_line(tmp_path):
    table = make_photo_csv(tmp_path, per_class=3)
    text = table.read_text().splitlines()
    text[4] = text[4].replace(",", ",caf\u00e9_", 1)  # a label written by a Latin-1 spreadsheet
    table.write_bytes(("\n".join(text) + "\n").encode("latin-1"))
    args = [*TINY[:2], "--data", "CSVDataModule", "--data.train_csv", str(table), *TINY[6:]]
    result = _run(tmp_path, "fit", *args)
    _refused(result, "`train_csv`", "train.csv' is not UTF-8 text: line 5", "iconv")


@pytest.mark.slow
def test_a_last_batch_of_one_image_is_dropped_and_said(tmp_path):
    for cls, count in (("cat", 5), ("dog", 4)):  # 9 training images, batch 8: 8 + 1
        (tmp_path / "photos" / "train" / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (25 * i, 200 if cls == "cat" else 40, 90)).save(
                tmp_path / "photos" / "train" / cls / f"{i}.png"
            )
    args = ["--model.freeze", "full_fine_tune", "--data.val_fraction", "0", "--trainer.max_epochs", "1"]
    result = _run(tmp_path, "fit", *TINY, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "9 training images per epoch make 1 batch(es) of 8 and one of a single image" in result.stderr
