"""Broken checkpoint and weights files get one line naming the file and what is wrong; nothing is unpickled."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lit_transfer.errors import CorruptFileError, UnsafeFileError
from lit_transfer.files.checks import (
    check_weights_file,
    checkpoint_problem,
    load_safetensors_file,
    load_torch_file,
    safetensors_problem,
    torch_file_problem,
)


def _checkpoint(path: Path) -> Path:
    torch.save({"epoch": 3, "state_dict": {"w": torch.arange(4096.0)}, "hyper_parameters": {"lr": 0.1}}, path)
    return path


def test_a_whole_checkpoint_loads_and_has_no_problem(tmp_path):
    path = _checkpoint(tmp_path / "last.ckpt")
    assert torch_file_problem(path) is None and checkpoint_problem(path) is None
    assert load_torch_file(path)["epoch"] == 3
    assert load_torch_file(path, mmap=True)["state_dict"]["w"][-1] == 4095


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda b: b"", "is empty (0 bytes)"),
        (lambda b: b[: len(b) // 2], "is cut short or damaged"),
        (lambda b: b[:-30], "is cut short or damaged"),
        (lambda b: os.urandom(5000).replace(b"PK", b"pk").replace(b"\x80", b"\x00"), "is not a PyTorch checkpoint"),
        (lambda b: b"<html><body>404 Not Found</body></html>", "is not a PyTorch checkpoint"),
    ],
    ids=["empty", "half", "tail-cut", "random", "html"],
)
def test_broken_checkpoints_are_named_with_what_is_wrong(tmp_path, damage, phrase):
    path = _checkpoint(tmp_path / "last.ckpt")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptFileError) as caught:
        load_torch_file(path, hint="Use another checkpoint.")
    message = str(caught.value)
    assert message.startswith(f"The checkpoint {str(path)!r} {phrase}") and message.endswith("Use another checkpoint.")
    assert "\n" not in message and "weights_only" not in message and "pickled" not in message
    assert checkpoint_problem(path).startswith(phrase)


def test_random_bytes_that_start_like_a_pickle_are_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x80\x02" + bytes(range(7, 250)) * 8)
    with pytest.raises(CorruptFileError) as caught:
        load_torch_file(path, what="weights file")
    message = str(caught.value)
    assert "weights.pth' is not a PyTorch file: its bytes do not unpickle (Unsupported operand 7)" in message
    assert "weights_only" not in message and "pickled objects" not in message
    with pytest.raises(CorruptFileError, match="Unsupported operand 7"):
        check_weights_file(path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_file_that_needs_unpickling_is_refused_as_unsafe(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeFileError, match="pickled Python objects"):
        load_torch_file(path)
    assert "pickled" in checkpoint_problem(path)


def test_the_legacy_format_still_loads(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    assert torch_file_problem(path) is None
    assert load_torch_file(path, what="weights file")["w"].sum() == 3


def test_a_tensor_file_without_state_dict_is_not_a_lightning_checkpoint(tmp_path):
    path = tmp_path / "w.ckpt"
    torch.save({"w": torch.ones(3)}, path)
    assert "not a Lightning checkpoint" in checkpoint_problem(path)
    assert checkpoint_problem(tmp_path / "missing.ckpt") == "does not exist"


def test_safetensors_files_cut_short_or_with_a_bad_header(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(1000.0)}, str(path))
    good = path.read_bytes()
    assert safetensors_problem(path) is None and load_safetensors_file(path)["w"][-1] == 999
    cases = {
        b"": "is empty",
        good[:5]: "is cut short (5 bytes",
        good[:-100]: "is cut short (its tensors need",
        (10**9).to_bytes(8, "little") + b"{}": "is cut short or not a safetensors file (its header length says",
        (4).to_bytes(8, "little") + b"nope": "is not a safetensors file (its header is not the JSON",
    }
    for content, phrase in cases.items():
        path.write_bytes(content)
        with pytest.raises(CorruptFileError, match=re.escape(f"w.safetensors' {phrase}")):
            load_safetensors_file(path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    assert load_safetensors_file(path)["w"].tolist() == [0.0, 0.0]
