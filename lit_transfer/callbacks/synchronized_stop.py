"""SynchronizedStop: under multi-process DDP, SIGTERM stops every process after the same training batch.

Lightning (2.6) stops ``fit`` on SIGTERM through ``trainer.received_sigterm``, which its handler sets in each process
when that process gets the signal; each process then raises ``SIGTERMException`` at the end of its own current batch,
and the handler itself runs a ``broadcast`` from inside the signal handler, in the middle of whatever collective the
process was running. With two or more processes the ranks then wait in collectives the others never join: the run
hangs, writes no ``on_exception.ckpt`` and is killed by the scheduler (Lightning-AI/pytorch-lightning#20806; seen
here on CPU with gloo: ``kill`` of the launching process, or of the whole process group, hangs ``fit``).

While training runs on several processes, this callback replaces Lightning's SIGTERM handler by one that only
records the signal; the handler that was installed before Lightning's (the command line's
:class:`~lit_transfer.cli.interrupts.StopSignals`) still runs. At the end of every training batch the processes
agree, with one boolean all-reduce, whether any of them received it, and if so all of them set ``received_sigterm``
together, so Lightning's own graceful stop runs in every process after the same batch: ``on_exception`` callbacks
(``on_exception.ckpt``) run together, and the command exits with status 143.

Where it stops: a signal during validation or before the first training batch stops the run at the end of the next
training batch; one after the last training batch lets the run finish. Lightning's handler stays in place in a
single process (nothing to synchronise) and outside the main thread. SIGINT (Ctrl-C) is Lightning's
``KeyboardInterrupt`` path, not this one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_transfer._compat import signal_connector

__all__ = ["SynchronizedStop"]


class SynchronizedStop(Callback):
    """Stop every DDP process after the same training batch when any of them receives SIGTERM.

    :class:`~lit_transfer.TransferClassifier` and the other lit_transfer models add it; any LightningModule trained
    on several processes can add it to its Trainer.

    Example::

        trainer = Trainer(strategy="ddp", devices=2, callbacks=[SynchronizedStop(), ExceptionCheckpoint()])

    Attributes:
        pending: Whether this process received SIGTERM during the current ``fit``.
    """

    def __init__(self) -> None:
        self.pending = False
        self._installed = False

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.pending = False
        self._installed = False

    @override
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._installed and trainer.strategy.reduce_boolean_decision(self.pending, all=False):
            signal_connector(trainer).received_sigterm = True  # in every process, after this same batch

    def _install(self, trainer: Trainer) -> None:
        """Replace Lightning's SIGTERM handler (registered as ``fit`` starts its loops) when several processes run."""
        if self._installed or trainer.world_size < 2 or threading.current_thread() is not threading.main_thread():
            return
        before_lightning = signal_connector(trainer)._original_handlers.get(signal.SIGTERM)

        def record(signum: int, frame: FrameType | None) -> None:
            self.pending = True  # the other processes learn it at the end of this batch, from the all-reduce
            if callable(before_lightning):
                before_lightning(signum, frame)

        signal.signal(signal.SIGTERM, record)  # Lightning's connector restores the original handler at teardown
        self._installed = True
