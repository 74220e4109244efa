"""Run folders claimed atomically, and the stop-signal handling of ``lit-transfer``'s ``main``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lit_transfer.cli.interrupts import Stopped, StopSignals
from lit_transfer.cli.run_files import RUN_DIR_ENV, claim_version_dir, default_loggers


def test_runs_claiming_together_each_get_their_own_folder(tmp_path):
    (tmp_path / "lightning_logs" / "version_3").mkdir(parents=True)  # an earlier run
    start = threading.Barrier(12)
    claimed: list[Path] = []

    def claim() -> None:
        start.wait()
        claimed.append(claim_version_dir(tmp_path))

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in claimed) == sorted(f"version_{n}" for n in range(4, 16))


def test_the_default_loggers_write_into_the_claimed_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    first = default_loggers(tmp_path)
    second = default_loggers(tmp_path)  # a second run before the first logged anything
    assert [logger.log_dir for logger in first] == [str(tmp_path / "lightning_logs" / "version_0")] * 2
    assert [logger.log_dir for logger in second] == [str(tmp_path / "lightning_logs" / "version_1")] * 2
    assert os.environ[RUN_DIR_ENV] == f"{os.getpid()}:{tmp_path / 'lightning_logs' / 'version_1'}"


def test_a_rank_process_launched_by_the_run_inherits_its_folder_and_claims_none(tmp_path):
    folder = claim_version_dir(tmp_path)
    script = (
        "from lit_transfer.cli.run_files import default_loggers; import sys;"
        f" print(default_loggers({str(tmp_path)!r})[0].log_dir)"
    )
    env = {**os.environ, "LOCAL_RANK": "1", RUN_DIR_ENV: f"{os.getpid()}:{folder}"}
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == str(folder)
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    env[RUN_DIR_ENV] = f"1:{folder}"  # not our parent's: a rank started by torchrun; rank 0 claims, this one reads
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == str(folder) and len(list((tmp_path / "lightning_logs").iterdir())) == 1


def test_sigterm_outside_a_training_loop_stops_at_once_and_is_recorded():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop, pytest.raises(Stopped) as caught:
        signal.raise_signal(signal.SIGTERM)  # to this thread: the handler runs here
        time.sleep(10)  # interrupted by the handler's exception
    assert caught.value.signum == signal.SIGTERM and stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    assert "stopped by SIGTERM (exit 143)" in stop.report(["predict", "--config", "x.yaml"])
    assert "no predictions.csv was written" in stop.report(["predict"])
    assert "finished; its results are complete" in stop.report(["test"], finished=True)


def test_sigint_is_a_keyboard_interrupt_and_recorded():
    # as in a foreground run: a process started in the background (`cmd &`) inherits SIGINT ignored, and
    # StopSignals keeps it ignored on purpose, so the test sets Python's own handler first
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_is_recorded()
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_is_recorded() -> None:
    with StopSignals() as stop, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # to this thread, so the handler runs here, not on a busy machine's whim
        time.sleep(10)  # interrupted by the handler's KeyboardInterrupt; a handler that never runs fails the test
    assert stop.received == signal.SIGINT
    assert "stopped by SIGINT (exit 130)" in stop.report(["fit"])
