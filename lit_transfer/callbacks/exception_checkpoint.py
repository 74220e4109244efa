"""ExceptionCheckpoint: save the training state when ``fit`` stops on an exception, beside the run's checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lit_transfer._compat import track_average_swaps, unswap_average
from lit_transfer.files.checkpoint_io import use_atomic_checkpoint_io
from lit_transfer.trainer_facts import callbacks_of

__all__ = ["ExceptionCheckpoint"]


class ExceptionCheckpoint(Callback):
    """Write ``on_exception.ckpt`` when ``fit`` ends on an exception (Ctrl-C, SIGTERM, a NaN loss, a crash).

    Unlike Lightning's ``OnExceptionCheckpoint``:

    * the file goes into the run's own checkpoint folder (``ModelCheckpoint``'s ``dirpath``, else
      ``<log_dir>/checkpoints``), never into the working directory;
    * it is written only once training has taken a step: an error in ``setup`` (a bad image, a wrong argument)
      leaves no checkpoint behind;
    * it is never picked up by itself. Lightning resumes every later ``fit`` from an ``OnExceptionCheckpoint``'s
      file when one exists; this callback is not one, so a run resumes only from the ``ckpt_path`` it is given;
    * it is written atomically (a Trainer with Lightning's default ``TorchCheckpointIO`` gets
      :class:`~lit_transfer.files.checkpoint_io.AtomicCheckpointIO` at ``setup``, which every checkpoint of the run then
      uses), and a failure while writing it (a full disk) is reported as a warning: the exception that stopped
      ``fit`` stays the one raised, and no earlier checkpoint is replaced by a broken file;
    * a stop during validation with Lightning's weight averaging (``EMAWeightAveraging``, ``WeightAveraging``) saves
      the training weights as the training weights and the average as the average. That callback swaps the two
      for each validation epoch, and an exception inside it leaves them swapped: the checkpoint would resume
      training from the average. They are swapped back first, so the model after the failed ``fit`` holds the
      training weights too.

    Args:
        filename: File name without the ``.ckpt`` suffix.

    Example::

        trainer = Trainer(callbacks=[ExceptionCheckpoint()])
        trainer.fit(model, datamodule)            # interrupted: <log_dir>/checkpoints/on_exception.ckpt
        trainer.fit(model, datamodule, ckpt_path=".../on_exception.ckpt")   # continue from there
    """

    def __init__(self, filename: str = "on_exception") -> None:
        if not filename or os.sep in filename:
            raise ValueError(f"`filename` must be a plain file name without folders, got {filename!r}.")
        self.filename = filename
        self.saved_path: Path | None = None

    @staticmethod
    def checkpoint_dir(trainer: Trainer) -> Path:
        """The folder the run's checkpoints go to."""
        checkpoint = trainer.checkpoint_callback
        dirpath = getattr(checkpoint, "dirpath", None) if checkpoint is not None else None
        return Path(dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints"))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        use_atomic_checkpoint_io(trainer)
        for callback in callbacks_of(trainer):
            if isinstance(callback, WeightAveraging):
                track_average_swaps(callback)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit":
            return
        for callback in callbacks_of(trainer):
            if isinstance(callback, WeightAveraging):
                unswap_average(callback, pl_module)
        if trainer.global_step == 0:
            return
        path = self.checkpoint_dir(trainer) / f"{self.filename}.ckpt"
        try:
            trainer.save_checkpoint(path, weights_only=False)  # the whole training state, to resume from
        except Exception as err:  # the exception that stopped fit stays the one to report
            self.saved_path = None
            rank_zero_warn(
                f"{type(exception).__name__} stopped fit at epoch {trainer.current_epoch}, step"
                f" {trainer.global_step}, and the training state could not be saved in {path} ({err})."
                " The run's earlier checkpoints are unchanged."
            )
            return
        self.saved_path = path
        rank_zero_info(
            f"{type(exception).__name__} at epoch {trainer.current_epoch}, step {trainer.global_step}: the training"
            f" state is saved in {path}; continue with `--ckpt_path {path}`."
        )
