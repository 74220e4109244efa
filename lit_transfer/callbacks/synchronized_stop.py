"""SynchronizedStop: under multi-process DDP, SIGTERM stops every process after the same batch.

Lightning (2.6) stops ``fit`` on SIGTERM through ``trainer.received_sigterm``, which its handler sets in each process
when that process gets the signal; each process then raises ``SIGTERMException`` at the end of its own current batch,
and the handler itself runs a ``broadcast`` from inside the signal handler, in the middle of whatever collective the
process was running. With two or more processes the ranks then wait in collectives the others never join: the run
hangs, writes no ``on_exception.ckpt`` and is killed by the scheduler (Lightning-AI/pytorch-lightning#20806; seen
here on CPU with gloo: ``kill`` of the launching process, or of the whole process group, hangs ``fit``).

On several processes, this callback has Lightning register, in place of its own SIGTERM notifier, one that only
records the signal (from ``setup`` on, so no window is left open); the handler that was installed before Lightning's
(the command line's :class:`~lit_transfer.cli.interrupts.StopSignals`) still runs after it. At the end of every
training batch the processes agree, with one boolean all-reduce, whether any of them received it, and if so all of
them set ``received_sigterm`` together, so Lightning's own graceful stop runs in every process after the same batch:
``on_exception`` callbacks (``on_exception.ckpt``) run together, and the command exits with status 143.

``validate`` and ``test`` are stopped the same way, after the same evaluation batch in every process. ``predict``,
which Lightning does not stop on SIGTERM at all, is stopped after the same prediction batch in every process by
raising Lightning's ``SIGTERMException`` there (no ``predictions.csv`` is written). Where it stops: in ``fit``, a
signal during validation or before the first training batch stops the run at the end of the next training batch,
and one after the last training batch lets the run finish; a signal before this callback's ``setup`` (while the
processes connect) is the command line's to handle: it stops the process that got it at once, and the others end
on the lost connection. Under ``ddp_spawn`` the workers stop the same way, but Lightning runs no ``on_exception``
hook in a spawned worker (no ``on_exception.ckpt``). A launching process that got the signal passes it on to the
workers (:class:`~lit_transfer.cli.interrupts.StopSignals`); when a worker got it alone, rank 0 sends SIGTERM to the
launching process of the ``lit-transfer`` command, which would otherwise wait forever for workers that stopped (a
launcher that did not say it handles stop signals, e.g. a user's script, is not signalled). In a single
process Lightning's own notifier stays (nothing to synchronise). SIGINT (Ctrl-C) is Lightning's
``KeyboardInterrupt`` path, not this one.

Work that runs before the first training batch and may take long (the feature pass of
:class:`~lit_transfer.callbacks.HeadProbe`) asks :func:`sigterm_agreed` after each of its steps and stops with
``SIGTERMException`` there, so a scheduler's SIGTERM is not left waiting for it.
"""

from __future__ import annotations

import signal
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lit_transfer._compat import replace_sigterm_notifier, set_received_sigterm, tell_spawn_launcher
from lit_transfer.trainer_facts import find_callback

__all__ = ["SynchronizedStop", "sigterm_agreed"]


class SynchronizedStop(Callback):
    """Stop every DDP process after the same batch when any of them receives SIGTERM.

    :class:`~lit_transfer.TransferClassifier` and the other lit_transfer models add it; any LightningModule trained
    on several processes can add it to its Trainer.

    Example::

        trainer = Trainer(strategy="ddp", devices=2, callbacks=[SynchronizedStop(), ExceptionCheckpoint()])

    Attributes:
        pending: Whether this process received SIGTERM during the current command.
        active: Whether it stands in for Lightning's notifier now (from ``setup`` to ``teardown`` on several
            processes).
    """

    def __init__(self) -> None:
        self.pending = False
        self._active = False

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pending = False
        self._active = trainer.world_size > 1
        if self._active:
            replace_sigterm_notifier(trainer, self._record)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._active:
            replace_sigterm_notifier(trainer, None)
        self._active = False

    @property
    def active(self) -> bool:
        """Whether SIGTERM now stops every process together (several processes, between ``setup`` and ``teardown``)."""
        return self._active

    def _record(self, signum: int, frame: Any) -> None:
        """The SIGTERM notifier: note it; the processes agree on it at the end of the batch (``_agree``)."""
        self.pending = True

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._agree(trainer)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.state.fn == "validate":  # inside `fit`, the training batches decide
            self._agree(trainer)

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._agree(trainer)

    @override
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._agree(trainer):
            raise SIGTERMException  # Lightning's predict loop has no graceful stop of its own

    def _agree(self, trainer: Trainer) -> bool:
        """All processes at once: set ``received_sigterm`` in every one when any received SIGTERM (one all-reduce).

        Returns:
            Whether the processes stop after this batch.
        """
        if self._active and trainer.strategy.reduce_boolean_decision(self.pending, all=False):
            set_received_sigterm(trainer)  # Lightning stops every process after this same batch
            if trainer.global_rank == 0:  # ddp_spawn: the launcher would wait forever (the stop is agreed once)
                tell_spawn_launcher(trainer, signal.SIGTERM)
            return True
        return False


def sigterm_agreed(trainer: Trainer) -> bool:
    """Whether SIGTERM asks the command to stop now; every process gets the same answer.

    One process: Lightning's ``received_sigterm``. Several processes with an active :class:`SynchronizedStop`: the
    processes agree with one all-reduce, so each must call this the same number of times, and every one sets
    ``received_sigterm`` when any got the signal. Several processes without one: ``False``, since a process that
    stopped alone would leave the others waiting in their next collective; Lightning then stops the run at a later
    batch.

    Args:
        trainer: The Trainer of the running command.
    """
    if trainer.world_size == 1:
        return bool(trainer.received_sigterm)
    stop = find_callback(trainer, SynchronizedStop)
    return stop is not None and stop.active and stop._agree(trainer)
