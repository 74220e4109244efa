"""Shared test setup: offline hub, no network, deterministic tiny runs.

``HF_HUB_OFFLINE`` must be set before ``huggingface_hub`` is imported, hence at the very top.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PL_DISABLE_FORK", "0")

import ctypes
import ipaddress
import multiprocessing.resource_tracker
import signal
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from quiet import quiet_trainer as _quiet_trainer
from quiet import tiny_images as _tiny_images

torch.set_num_threads(1)
if sys.platform == "linux":  # orphans of the commands a test starts (a DDP rank whose launcher died) come back here
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host in {"localhost"}
    return True  # unix sockets


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection outside this machine."""
    real_connect = socket.socket.connect
    real_create_connection = socket.create_connection

    def guarded_connect(self: socket.socket, address: object) -> object:
        if not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect(self, address)

    def guarded_create_connection(address: object, *args: object, **kwargs: object) -> socket.socket:
        if not _is_loopback(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_create_connection(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)


# The rendezvous variables of torch.distributed. Lightning's spawn launcher writes MASTER_PORT into this process's
# environment, where a later in-process DDP run would reuse the port and every command a test starts would inherit it.
_RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE")
DDP_TIMEOUT_S = 180  # the slowest 2-process test takes about 30 s on 2 cores; past this it hangs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Retry only the 2-process DDP tests, and only on SIGABRT or a hang; stop their hangs after 180 s.

    A spawned DDP worker can abort in interpreter teardown after its fit has finished ("terminate called without an
    active exception", SIGABRT; a command run in a subprocess shows the first), and, rarely, a 2-process run under
    gloo hangs instead (its ``subprocess.run`` times out, or pytest-timeout stops an in-process one). No other
    failure, and no other test, is retried; a run that hangs every time still fails. Every DDP test starts on a
    fresh rendezvous port and leaves no process behind (``ddp_isolation``), so a hang cannot spread to the next test.

    ``make test`` and CI run the tests on two pytest-xdist workers with ``--dist loadfile``: a file's tests share one
    worker, so its module fixtures (a fitted run) are built once. Tests of different files may run at the same time,
    two 2-process DDP tests included (hence the generous timeout).
    """
    retried = ["SIGABRT", "terminate called without an active exception", "TimeoutExpired", "Timeout \\(>"]
    for item in items:
        ddp = item.get_closest_marker("ddp") is not None
        if ddp:
            item.add_marker(pytest.mark.flaky(reruns=2, only_rerun=retried))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DDP_TIMEOUT_S, func_only=True))  # each retry too


def _children() -> list[int]:
    """This process's child processes (orphans of its commands included, see PR_SET_CHILD_SUBREAPER above)."""
    mine = str(os.getpid())
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == mine:
                children.append(int(entry.name))
    return children


@pytest.fixture(autouse=True)
def ddp_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Start every test without rendezvous variables; after a DDP test, end every process it left (a hung rank).

    A rank left hanging holds its port, and the pipe of the command that runs the tests, for ever.
    """
    for name in _RENDEZVOUS_ENV:
        os.environ.pop(name, None)
    yield
    for name in _RENDEZVOUS_ENV:
        os.environ.pop(name, None)
    if request.node.get_closest_marker("ddp") is not None:
        _end_children()


_REPO = Path(__file__).resolve().parents[1]
_CACHES = {"runs", "site", "lightning_logs", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build", "dist"}
"""Folders a test run or the tools beside it may create at the top of the clone (the benchmarks' cache, ``runs/``)."""


@pytest.fixture(autouse=True)
def nothing_left_in_the_clone() -> Iterator[None]:
    """A test writes under its ``tmp_path``: a file or folder it leaves at the top of the clone fails it.

    A Trainer without ``default_root_dir`` checkpoints into the working directory (``./checkpoints``), which is the
    clone when the suite runs there.
    """
    before = set(os.listdir(_REPO))
    yield
    new = set(os.listdir(_REPO)) - before - _CACHES
    assert not new, f"the test left {sorted(new)} at the top of the clone; write under `tmp_path`"


def pytest_unconfigure(config: pytest.Config) -> None:
    """No process outlives the test run: one left hanging would hold the caller's output pipe open."""
    _end_children()


def _end_children() -> None:
    """Kill and reap this process's children but multiprocessing's resource tracker (Linux; elsewhere nothing)."""
    if sys.platform != "linux":
        return
    tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    for pid in set(_children()) - {tracker}:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def quiet_trainer(tmp_path):
    """A factory of the quiet CPU Trainer (``tests/quiet.py``) writing under the test's ``tmp_path``."""
    return lambda **overrides: _quiet_trainer(tmp_path, **overrides)


@pytest.fixture
def tiny_images():
    """A factory of the tiny random image dataset (``tests/quiet.py``)."""
    return _tiny_images


@pytest.fixture
def restored_process_state():
    """Put back what a benchmark quiets for its own process (logger levels, warning filters, torch threads)."""
    import logging

    names = ("lightning", "lightning.pytorch", "lightning.fabric", "lit_transfer")
    levels = {name: logging.getLogger(name).level for name in names}
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    torch.set_num_threads(threads)
