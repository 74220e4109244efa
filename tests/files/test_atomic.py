"""Atomic writes: the target is the old file or the new complete one, never a part; no temporary file stays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fault_helpers import fill, tmpfs

from lit_transfer.errors import FileWriteError
from lit_transfer.files.atomic import atomic_open, atomic_path, atomic_write_bytes, remove_stale_temp_files, temp_name


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_open(target, "wb") as handle:
        handle.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_ctrl_c_in_the_middle_of_a_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("new, but")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_the_temporary_file_is_next_to_the_target_with_the_suffix_asked_for(tmp_path):
    seen = []
    with atomic_path(tmp_path / "sub" / "curves.png", suffix=".png") as temp:
        seen.append(temp)
        temp.write_bytes(b"png")
    assert seen[0].parent == tmp_path / "sub" and seen[0].suffix == ".png" and seen[0].name.startswith(".curves.png")
    assert (tmp_path / "sub" / "curves.png").read_bytes() == b"png" and not seen[0].exists()


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wrote nothing"), atomic_path(tmp_path / "x.onnx"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        target = disk / "model.onnx"
        target.write_bytes(b"old model")
        fill(disk, leave=16 * 1024)
        with pytest.raises(FileWriteError) as caught:
            atomic_write_bytes(target, b"x" * 200_000)
        message = str(caught.value)
        assert "model.onnx" in message and "no space left" in message and "previous file" in message
        assert caught.value.errno == 28  # ENOSPC: still an OSError a caller can test
        assert target.read_bytes() == b"old model"
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "model.onnx"]


def test_stale_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = temp_name(tmp_path / "last.ckpt")
    mine.write_bytes(b"in progress")
    stale = tmp_path / mine.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    stale.write_bytes(b"left by a kill -9")
    other_host = tmp_path / ".last.ckpt.tmp.some-other-host.1.abcd"
    other_host.write_bytes(b"not ours to judge")
    unrelated = tmp_path / ".hidden.tmp.txt"
    unrelated.write_bytes(b"a user's file")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert mine.exists() and other_host.exists() and unrelated.exists() and not stale.exists()


def test_the_first_write_into_a_folder_removes_what_a_killed_writer_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = temp_name(tmp_path / "predictions.csv").name
    left = tmp_path / name.replace(f".{os.getpid()}.", f".{dead.stdout.strip()}.")
    left.write_text("file,predicted\nhalf")
    atomic_write_bytes(tmp_path / "predictions.csv", b"file,predicted\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]
