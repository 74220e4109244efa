"""Exports on a full disk and from broken checkpoints: a clear error, never a cut-short file or an abort."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from fault_helpers import fill, tmpfs

from lit_transfer import TransferClassifier
from lit_transfer.errors import CorruptFileError, FileWriteError
from lit_transfer.export import export_onnx, export_torchscript


@pytest.mark.parametrize("export", [export_onnx, export_torchscript], ids=["onnx", "torchscript"])
def test_a_full_disk_keeps_the_previous_export_and_names_the_file(tmp_path, export):
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        target = disk / "model.bin"
        target.write_bytes(b"the previous export")
        fill(disk, leave=4096)
        with pytest.raises(FileWriteError, match=r"model\.bin'.*no space left.*previous file under that name is kept"):
            export(model, target, image_size=32)
        assert target.read_bytes() == b"the previous export"
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "model.bin"]


def test_torchscript_to_a_full_disk_does_not_abort_the_process(tmp_path):
    """Before: ``torch.jit.save`` to a full disk ended the process with ``c10::Error`` (exit 134)."""
    with tmpfs(tmp_path / "disk", "512k") as disk:
        fill(disk, leave=4096)
        script = (
            "from lit_transfer import TransferClassifier; from lit_transfer.export import export_torchscript\n"
            "from lit_transfer.errors import FileWriteError\n"
            "model = TransferClassifier('test_resnet', num_classes=3, pretrained=False)\n"
            f"try:\n    export_torchscript(model, {str(disk / 'model.pt')!r}, image_size=32)\n"
            "except FileWriteError as err:\n    print('refused:', err)\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "refused:" in result.stdout and "model.pt" in result.stdout
        assert not (disk / "model.pt").exists()


def test_a_cut_short_checkpoint_is_named_before_anything_is_exported(tmp_path):
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-200])
    with pytest.raises(CorruptFileError, match=r"best\.ckpt' is cut short"):
        export_onnx(ckpt, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
