"""Callbacks the fault tests add with ``--trainer.callbacks+=fault_callbacks.<name>``: ``Announce`` says which batch a
loop has finished, so a test can send a signal in the middle of ``validate``, ``test`` or ``predict``;
``SigtermAtTrainStart`` sends SIGTERM to its own process as training starts, before the model's callbacks (a head
probe's feature pass) run; ``SigtermInValidation`` sends it in the middle of an epoch's validation."""

import os
import signal
import sys
import time

from lightning.pytorch import Callback


class Announce(Callback):
    """Print ``BATCH <stage> <index>`` after every evaluation and prediction batch, then wait ``pause`` seconds."""

    def __init__(self, pause: float = 0.5) -> None:
        self.pause = pause

    def _say(self, stage: str, batch_idx: int) -> None:
        print(f"BATCH {stage} {batch_idx}", file=sys.stderr, flush=True)
        time.sleep(self.pause)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._say("validate", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._say("test", batch_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._say("predict", batch_idx)


class SigtermAtTrainStart(Callback):
    """Send SIGTERM to this process in ``on_train_start`` on rank ``rank`` (before the model's callbacks run)."""

    def __init__(self, rank: int = 0) -> None:
        self.rank = rank

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == self.rank:
            print(f"SIGTERM rank {self.rank}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermInValidation(Callback):
    """Send SIGTERM to this process after the first validation batch of epoch ``epoch`` (not the sanity check)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0 and not trainer.sanity_checking:
            print(f"SIGTERM validation epoch {self.epoch}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
