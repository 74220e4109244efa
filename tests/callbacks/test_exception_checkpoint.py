"""ExceptionCheckpoint and AtomicCheckpointIO: checkpoints never go through $TMPDIR, a failed save breaks nothing.

Real Trainers, a real tmpfs for the full disk and for a ``$TMPDIR`` on another filesystem (skipped where mounting is
not permitted).
"""

from __future__ import annotations

import tempfile

import lightning.pytorch as pl
import pytest
import torch
from callback_helpers import FixedDataModule, TinyRegressor, fit
from fault_helpers import fill, tmpfs
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_transfer.callbacks import ExceptionCheckpoint
from lit_transfer.errors import CorruptFileError, FileWriteError
from lit_transfer.files.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoint_io


class FailAt(pl.Callback):
    """Raise ``error`` before training step ``step`` (after at least one epoch's checkpoint was written)."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise self.error


def test_checkpoints_never_touch_tmpdir_and_load_back(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "tmp", "8m") as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
        last = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", enable_version_counter=False)
        trainer = fit(tmp_path, TinyRegressor(), FixedDataModule(), [last, ExceptionCheckpoint()], max_epochs=2)
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        assert list(tmpdir.iterdir()) == []  # Lightning's default writes the file here first, then moves it
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_configured_checkpoint_io_is_kept(tmp_path):
    class Mine(TorchCheckpointIO):
        pass

    trainer = pl.Trainer(plugins=[Mine()], default_root_dir=tmp_path, logger=False)
    assert not use_atomic_checkpoint_io(trainer) and type(trainer.strategy.checkpoint_io) is Mine
    plain = pl.Trainer(default_root_dir=tmp_path, logger=False)
    assert use_atomic_checkpoint_io(plain) and isinstance(plain.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_full_disk_keeps_the_good_checkpoint_and_reports_the_first_error(tmp_path):
    """Epoch 0's ``last.ckpt`` is written; the disk fills; epoch 1's save fails. The good file stays, the error names
    the file, and ``on_exception.ckpt`` (which cannot be written either) neither replaces the error nor stays empty."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        folder = disk / "ckpt"

        class FillAfterFirstEpoch(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module) -> None:
                if trainer.current_epoch == 1:
                    assert (folder / "last.ckpt").exists()
                    fill(disk, leave=512)

        last = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False, save_on_exception=False)
        exception = ExceptionCheckpoint()
        with pytest.raises(FileWriteError) as caught, pytest.warns(UserWarning, match="could not be saved"):
            fit(
                tmp_path,
                TinyRegressor(),
                FixedDataModule(n=64),
                [last, FillAfterFirstEpoch(), exception],
                max_epochs=3,
            )
        assert "last.ckpt" in str(caught.value) and "no space left" in str(caught.value)
        assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no on_exception.ckpt, no temporary file
        assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0
        assert exception.saved_path is None


def test_the_on_exception_checkpoint_resumes_and_a_broken_one_is_named(tmp_path):
    exception = ExceptionCheckpoint()
    with pytest.raises(RuntimeError, match="stop here"):
        fit(tmp_path, TinyRegressor(), FixedDataModule(), [FailAt(11, RuntimeError("stop here")), exception])
    saved = exception.saved_path
    assert saved is not None and torch.load(saved, weights_only=True)["global_step"] == 11
    trainer = fit(tmp_path / "b", TinyRegressor(), FixedDataModule(), ckpt_path=saved, max_epochs=3)
    assert trainer.global_step == 24
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=r"on_exception\.ckpt' is cut short"):
        fit(tmp_path / "c", TinyRegressor(), FixedDataModule(), [ExceptionCheckpoint()], ckpt_path=saved)
