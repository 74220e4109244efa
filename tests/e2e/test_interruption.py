"""A real SIGTERM to a real `lit-transfer fit` process leaves a checkpoint that `fit --ckpt_path` resumes.

The test reads the child's output as it comes and signals it on the line that announces the unfreeze: no polling and
no sleeps, so a slow machine only makes it wait longer, never signal at the wrong moment."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FREEZING_KEY = "LayerFreezing[backbone_attr=backbone]"


def _fit_command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lit_transfer",
        "fit",
        "--config",
        str(REPO / "recipes" / "defaults.yaml"),
        "--model.backbone",
        "test_resnet",
        "--model.freeze",
        "freeze_unfreeze",
        "--data.image_size",
        "16",
        "--data.batch_size",
        "8",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _terminal_signals() -> None:
    """In the child: SIGINT as a terminal delivers it. A background job (``cmd &`` in a script, e.g. a CI runner)
    inherits SIGINT as ignored, and Python keeps an ignored SIGINT ignored, so Ctrl-C could not be simulated."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_ALL_GROUPS_TRAIN = re.compile(r"LayerFreezing: (\d+)/\1 groups train")  # the unfreeze at epoch 1: every group trains


def _read_until(lines: queue.Queue[str | None], seen: list[str], pattern: re.Pattern[str], timeout: float) -> None:
    """Block on the child's output, line by line, until a line matches ``pattern`` (no polling, no sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"no line matching {pattern.pattern!r} within {timeout:.0f} s:\n{''.join(seen)[-3000:]}"
            ) from None
        if line is None:
            raise AssertionError(f"the fit ended before a line matching {pattern.pattern!r}:\n{''.join(seen)[-3000:]}")
        seen.append(line)
        if pattern.search(line):
            return


def _wait_without_hanging(process: subprocess.Popen[str]) -> int:
    """The signalled command's status; a command still running 120 s later hung (a failure, never retried)."""
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pass  # fail outside the handler: a chained timeout would be retried as gloo's rare hang
    pytest.fail("the command still ran 120 s after the signal: it hung instead of stopping")


def _spawned_workers(launcher: int) -> list[int]:
    """The process ids of the ``ddp_spawn`` workers ``launcher`` started (its children running ``spawn_main``)."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        if parent == launcher and b"spawn_main" in command:
            workers.append(int(stat.parent.name))
    return sorted(workers)


def _interrupt_after_unfreeze(
    tmp_path: Path,
    root: Path,
    sig: int,
    extra: tuple[str, ...] = (),
    whole_group: bool = False,
    saves: bool = True,
    one_worker: bool = False,
) -> dict:
    """Start a 40-epoch fit, send ``sig`` once epoch 1 has unfrozen the backbone; return the on-exception state.

    LayerFreezing announces the unfreeze at the start of epoch 1, after epoch 0's checkpoint. Lightning turns a
    SIGTERM into an exception after the batch in progress, so its checkpoint holds that step's optimizer state too.
    ``whole_group`` signals every process of the command (as SLURM does), else only the one started (as ``kill PID``
    and Kubernetes do); ``one_worker`` only the first ``ddp_spawn`` worker it started. The command must exit with
    ``128 + sig``. ``saves=False``: the command must save no ``on_exception.ckpt``; the state returned is then the
    run's ``last.ckpt``.
    """
    process = subprocess.Popen(
        _fit_command(root, "--trainer.max_epochs", "40", *extra),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=_terminal_signals,
        start_new_session=whole_group,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # drains the pipe, so the child never blocks on a full one
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        _read_until(lines, seen, _ALL_GROUPS_TRAIN, timeout=240)
        if whole_group:
            os.killpg(process.pid, sig)
        elif one_worker:
            workers = _spawned_workers(process.pid)
            assert len(workers) == 2, workers
            os.kill(workers[0], sig)
        else:
            process.send_signal(sig)
        returncode = _wait_without_hanging(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL) if whole_group else process.kill()
            process.wait()
    reader.join(timeout=30)
    saved = list(root.rglob("on_exception.ckpt"))
    while not lines.empty():
        seen.append(lines.get() or "")
    assert returncode == 128 + sig, "".join(seen)[-3000:]
    if not saves:
        assert not saved, "".join(seen)[-3000:]
        saved = list(root.rglob("last.ckpt"))
    assert len(saved) == 1, "".join(seen)[-3000:]
    return {"path": saved[0], "output": "".join(seen), **torch.load(saved[0], weights_only=True)}


def _resume_two_more_epochs(tmp_path: Path, root: Path, state: dict, *extra: str) -> dict:
    """``fit --ckpt_path`` the on-exception checkpoint up to two epochs further; the newest ``last.ckpt`` it wrote."""
    stop = state["epoch"] + 2
    resumed = subprocess.run(
        _fit_command(root, "--trainer.max_epochs", str(stop), "--ckpt_path", str(state["path"]), *extra),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime), weights_only=True)
    assert final["epoch"] == stop - 1 and final["global_step"] > state["global_step"]
    return final


@pytest.mark.slow  # over ~15 s on 2 cores
def test_sigterm_mid_epoch_then_resume(tmp_path):
    root = tmp_path / "run"
    state = _interrupt_after_unfreeze(tmp_path, root, signal.SIGTERM)
    assert state["epoch"] >= 1 and state["global_step"] > 0
    assert state["callbacks"][FREEZING_KEY]["trainable_groups"] == 6  # unfrozen when interrupted
    assert state["optimizer_states"][0]["state"], "optimizer state lost"

    final = _resume_two_more_epochs(tmp_path, root, state)
    assert final["callbacks"][FREEZING_KEY]["trainable_groups"] == 6
    assert set(final["optimizer_states"][0]["state"]) == set(state["optimizer_states"][0]["state"])


DDP = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("whole_group", [False, True], ids=["launching-process", "every-process"])
def test_sigterm_under_ddp_stops_every_process_after_the_same_batch_then_resumes(tmp_path, whole_group):
    """Lightning alone hangs here (each process stops on its own, in the middle of a collective): SynchronizedStop."""
    root = tmp_path / "run"
    state = _interrupt_after_unfreeze(tmp_path, root, signal.SIGTERM, DDP, whole_group=whole_group)
    assert state["output"].count("lit-transfer: stopped by SIGTERM (exit 143)") == 1  # rank 0 reports, once
    assert state["epoch"] >= 1 and state["global_step"] > 0
    assert state["callbacks"][FREEZING_KEY]["trainable_groups"] == 6
    assert state["optimizer_states"][0]["state"], "optimizer state lost"
    _resume_two_more_epochs(tmp_path, root, state, *DDP)


SPAWN = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn")


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("target", ["launching-process", "every-process", "one-worker"])
def test_sigterm_under_ddp_spawn_ends_with_143_and_names_the_checkpoint_to_resume_from(tmp_path, target):
    """Under ddp_spawn the launching process trains nothing and waited forever; now it passes the signal on, and a
    worker signalled alone tells it.

    Lightning's spawned workers run no ``on_exception`` hook, so no ``on_exception.ckpt``: the run resumes from the
    ``last.ckpt`` of its last finished epoch, with the command the report prints.
    """
    root = tmp_path / "run"
    whole_group, one_worker = target == "every-process", target == "one-worker"
    state = _interrupt_after_unfreeze(
        tmp_path, root, signal.SIGTERM, SPAWN, whole_group=whole_group, saves=False, one_worker=one_worker
    )
    report = state["output"][state["output"].index("lit-transfer: stopped by SIGTERM (exit 143)") :]
    assert "strategy: ddp_spawn" in report and "--ckpt_path last" in report
    assert state["output"].count("lit-transfer: stopped by SIGTERM (exit 143)") == 1
    assert state["epoch"] >= 0 and state["global_step"] > 0 and state["optimizer_states"][0]["state"]
    final = _resume_two_more_epochs(tmp_path, root, {**state, "path": "last"}, *SPAWN)  # as the report says
    assert final["callbacks"][FREEZING_KEY]["trainable_groups"] == 6


# The line each command prints once its loop has started (Lightning's SIGTERM handling is in place then), and the
# last line it ends with when SIGTERM stops it.
_STARTED = {
    # Lightning warns about the DistributedSampler as the test loop sets up its data, after it registered its SIGTERM
    # handler: alone, that handler broadcasts from inside the signal handler and the command crashes
    "test": re.compile("Using `DistributedSampler` with the dataloaders"),
    # PredictionCSVWriter removes the previous predictions.csv as the predict loop starts; Lightning alone does not
    # stop predict on SIGTERM: the signalled process ended at once and the other one failed on the lost connection
    "predict": re.compile("Removed the previous .*predictions.csv"),
}
_STOPPED = {
    "test": "lit-transfer: stopped by SIGTERM (exit 143): the test did not finish",
    "predict": "lit-transfer: stopped by SIGTERM (exit 143): no predictions.csv was written",
}


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_sigterm_under_ddp_evaluation_stops_every_process_with_a_status_not_a_hang(tmp_path, subcommand):
    """`lit-transfer test` or `predict` on two processes, signalled (the launching one) once its loop started."""
    root = tmp_path / "run"
    fitted = subprocess.run(
        _fit_command(root, "--trainer.max_epochs", "1"), cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    checkpoint = next(root.rglob("last.ckpt"))
    previous = checkpoint.parent.parent / "predict" / "predictions.csv"  # a complete-looking file of an earlier run
    if subcommand == "predict":
        previous.parent.mkdir()
        previous.write_text("file,label,probability\n")
    command = [*_fit_command(root, "--data.batch_size", "1", "--ckpt_path", str(checkpoint), *DDP)]
    command[command.index("fit")] = subcommand
    process = subprocess.Popen(
        command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # ends when every process of the command has closed the pipe: rank 1 too
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        _read_until(lines, seen, _STARTED[subcommand], timeout=240)
        process.send_signal(signal.SIGTERM)
        returncode = _wait_without_hanging(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    while (line := lines.get(timeout=60)) is not None:
        seen.append(line)
    output = "".join(seen)
    assert returncode == 143, output[-3000:]
    assert output.strip().splitlines()[-1].startswith(_STOPPED[subcommand]), output[-3000:]
    assert output.count("lit-transfer: stopped by SIGTERM") == 1  # rank 0 reports, once
    assert "Traceback" not in output, output[-3000:]  # the other process stopped too, not on a lost connection
    if subcommand == "predict":
        assert not list(previous.parent.glob("predictions.csv*"))  # no result, complete-looking or partial


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint(tmp_path):
    """SIGINT (Ctrl-C) goes through Lightning's interrupt handling: the on-exception checkpoint is written."""
    state = _interrupt_after_unfreeze(tmp_path, tmp_path / "run", signal.SIGINT)
    assert state["global_step"] > 0 and state["callbacks"][FREEZING_KEY]["trainable_groups"] == 6


@pytest.mark.slow
def test_concurrent_runs_in_separate_directories_do_not_clash(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    processes = [
        subprocess.Popen(
            _fit_command(root, "--trainer.max_epochs", "2", "--data.shots_per_class", "10"),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for root in runs
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    for root in runs:
        [last] = list(root.rglob("last.ckpt"))
        assert torch.load(last, weights_only=True)["epoch"] == 1
        assert len(list(root.rglob("config.yaml"))) == 1
        assert len(list(root.rglob("metrics.csv"))) == 1
