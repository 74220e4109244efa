"""Stop signals: a run ended by SIGTERM or SIGINT exits with ``128 + signal`` after saving what it can.

Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary, which is a ``SystemExit`` with
status 0, and Ctrl-C into ``sys.exit(1)``; ``predict`` does not look at SIGTERM at all. A scheduler (SLURM,
Kubernetes, CI) reads status 0 as "done" and does not retry. :class:`StopSignals` records the signal, lets
Lightning's graceful stop run where it exists (``fit``, ``validate``, ``test``: the batch in progress finishes,
``fit`` saves ``on_exception.ckpt``; on several processes :class:`~lit_transfer.SynchronizedStop` stops ``predict``
the same way) and stops everything else at once (``predict`` on one process, data scanning before the first
batch), so :func:`lit_transfer.cli.main` can exit with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT) and print
how to resume.

Under ``strategy: ddp_spawn`` the launching process trains nothing: it waits for workers that never hear of a signal
sent to it, and a worker stopped by a signal runs no ``on_exception`` hook and sends the launcher no result, which
then waits forever. There :class:`StopSignals` passes the signal on to the workers (they stop after the same batch)
and stops the launching process at once: the run ends with 143 and no ``on_exception.ckpt``, and resumes from its
``last.ckpt``. A signal sent to one worker alone reaches the launching process the other way: the workers agree to
stop (:class:`~lit_transfer.SynchronizedStop`) and rank 0 sends SIGTERM to the process whose id
:data:`~lit_transfer._compat.STOP_SIGNALS_PID_ENV` holds (set here).
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
import weakref
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import RunningStage, TrainerStatus

from lit_transfer._compat import STOP_SIGNALS_PID_ENV, stop_spawned_workers
from lit_transfer.callbacks.synchronized_stop import SynchronizedStop
from lit_transfer.cli.arguments import without_options

__all__ = ["STOP_SIGNALS", "StopSignals", "Stopped", "register_trainer", "resume_command"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_GRACEFUL_STAGES = (RunningStage.TRAINING, RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)
_ACTIVE: list[StopSignals] = []


class Stopped(BaseException):
    """Raised by the signal handler where Lightning has no graceful stop (``predict``, setup before the loops)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def register_trainer(trainer: Trainer) -> None:
    """Tell the active :class:`StopSignals` (if any) which Trainer the command runs."""
    if _ACTIVE:
        _ACTIVE[-1].trainer = trainer


class StopSignals:
    """Record SIGTERM and SIGINT during a command; stop it gracefully where Lightning can, at once elsewhere.

    Use as a context manager around the whole command (main thread only; elsewhere it records nothing). The previous
    handlers are restored on exit, but for SIGTERM after a stop passed on to ``ddp_spawn`` workers: it stays ignored,
    as the command only reports and exits then.

    Attributes:
        received: The first stop signal received, or ``None``.
        trainer: The Trainer the command runs (set through :func:`register_trainer`).
        spawned: Whether the signal was passed on to ``ddp_spawn`` workers (the run saved no ``on_exception.ckpt``).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.spawned = False
        self._trainer: weakref.ReferenceType[Trainer] | None = None
        self._previous: dict[int, Any] = {}
        self._previous_pid: str | None = None

    @property
    def trainer(self) -> Trainer | None:
        """The registered Trainer, while it exists."""
        return self._trainer() if self._trainer is not None else None

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self._trainer = weakref.ref(trainer) if trainer is not None else None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous_pid = os.environ.get(STOP_SIGNALS_PID_ENV)
            os.environ[STOP_SIGNALS_PID_ENV] = str(os.getpid())  # ddp_spawn workers tell this process of a stop
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                if signum == signal.SIGINT and self._previous[signum] == signal.SIG_IGN:
                    continue  # a background job: keep SIGINT ignored, as the shell asked
                signal.signal(signum, self._handle)
        _ACTIVE.append(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for signum, handler in self._previous.items():
            # after passing a stop on to ddp_spawn workers this process only reports and exits; the workers' rank 0
            # may send SIGTERM back meanwhile (SynchronizedStop tells a launcher it cannot know was told already)
            signal.signal(signum, signal.SIG_IGN if self.spawned and signum == signal.SIGTERM else handler)
        if self._previous:
            if self._previous_pid is None:
                os.environ.pop(STOP_SIGNALS_PID_ENV, None)
            else:
                os.environ[STOP_SIGNALS_PID_ENV] = self._previous_pid
        self._previous = {}

    def _graceful(self) -> bool:
        """Whether the running loop stops by itself at the next batch boundary (its notifier saw SIGTERM too).

        Lightning's loops do, but ``predict``; on several processes :class:`SynchronizedStop` stops ``predict`` too.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            return False
        if trainer.state.fn == "predict":
            return trainer.state.stage == RunningStage.PREDICTING and any(
                isinstance(callback, SynchronizedStop) and callback.active
                for callback in getattr(trainer, "callbacks", None) or []
            )
        return trainer.state.stage in _GRACEFUL_STAGES

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self.spawned:
            return  # the workers were told and this process is stopping (a worker may send the signal back)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # Lightning's own Ctrl-C handling: on_exception callbacks, then sys.exit(1)
        trainer = self.trainer
        if not first and trainer is not None and trainer.state.status == TrainerStatus.INTERRUPTED:
            return  # a second SIGTERM while the first one's checkpoint is written: let it finish
        if trainer is not None and stop_spawned_workers(trainer, signum):
            self.spawned = True  # the workers stop after the same batch; this process would wait for them forever
            raise Stopped(signum)
        if self._graceful():
            return  # Lightning's notifier (SynchronizedStop's on several processes) ran first: stops at a batch end
        raise Stopped(signum)

    def saved_checkpoint(self) -> str | None:
        """Where the stopped ``fit`` saved its state (``ExceptionCheckpoint.saved_path``), or ``None``."""
        trainer = self.trainer
        for callback in getattr(trainer, "callbacks", None) or []:
            path = getattr(callback, "saved_path", None)
            if path is not None and type(callback).__name__ == "ExceptionCheckpoint":
                return str(path)
        return None

    def report(self, argv: Sequence[str], finished: bool = False) -> str:
        """The last lines a stopped command prints: which signal, the exit status, and how to go on.

        Args:
            argv: The command line (its subcommand and options, for the resume command).
            finished: The command completed although the signal arrived (an evaluation's last batch was running):
                its results are complete and it exits with status 0.
        """
        assert self.received is not None
        name = signal.Signals(self.received).name
        status = 128 + self.received
        trainer = self.trainer
        subcommand = next((a for a in argv if not a.startswith("-")), "")
        if finished:
            return f"lit-transfer: {name} arrived as the {subcommand or 'command'} finished; its results are complete."
        head = f"lit-transfer: stopped by {name} (exit {status})"
        if subcommand == "fit" and self.spawned:
            return (
                f"{head}. Under `strategy: ddp_spawn` Lightning's workers save nothing when stopped (no"
                " on_exception.ckpt): resume from the run's last checkpoint with:\n"
                f"  {resume_command(argv, 'last')}\n"
                "`strategy: ddp` stops every process after the same batch and saves the training state there."
            )
        if subcommand == "fit":
            saved = self.saved_checkpoint()
            if saved is not None:
                where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}" if trainer is not None else ""
                return (
                    f"{head}{where}. The training state is saved in {saved}; resume with:\n"
                    f"  {resume_command(argv, saved)}"
                )
            return f"{head} before a training step had finished: nothing to resume; run the same command again."
        if subcommand == "predict":
            return f"{head}: no predictions.csv was written; run the same command again."
        if subcommand in ("validate", "test"):
            return f"{head}: the {subcommand} did not finish and reported no metrics; run the same command again."
        return f"{head}; run the same command again."


def resume_command(argv: Sequence[str], ckpt_path: str) -> str:
    """``lit-transfer <argv>`` with ``--ckpt_path`` replaced by ``ckpt_path``.

    Example:
        >>> resume_command(["fit", "--config", "a.yaml", "--ckpt_path", "last"], "runs/x/on_exception.ckpt")
        'lit-transfer fit --config a.yaml --ckpt_path runs/x/on_exception.ckpt'
    """
    return shlex.join(["lit-transfer", *without_options(argv, ["ckpt_path"]), "--ckpt_path", ckpt_path])
