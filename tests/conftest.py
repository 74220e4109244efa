"""Shared test setup: offline hub, no network, deterministic tiny runs.

``HF_HUB_OFFLINE`` must be set before ``huggingface_hub`` is imported, hence at the very top.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PL_DISABLE_FORK", "0")

import ipaddress
import socket
import warnings

import pytest
import torch
from quiet import quiet_trainer as _quiet_trainer
from quiet import tiny_images as _tiny_images

torch.set_num_threads(1)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Retry only the 2-process DDP tests, and only on SIGABRT or a command that timed out.

    A spawned DDP worker can abort in interpreter teardown after its fit has finished ("terminate called without an
    active exception", SIGABRT; a command run in a subprocess shows the first), and, rarely, a 2-process command
    under gloo hangs instead (its ``subprocess.run`` times out). No other failure, and no other test, is retried;
    a command that hangs every time still fails.
    """
    retried = ["SIGABRT", "terminate called without an active exception", "TimeoutExpired"]
    for item in items:
        if item.get_closest_marker("ddp") is not None:
            item.add_marker(pytest.mark.flaky(reruns=2, only_rerun=retried))


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
