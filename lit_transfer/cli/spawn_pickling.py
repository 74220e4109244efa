"""Under ``strategy: ddp_spawn``, refuse a callback the worker processes cannot receive, before anything runs.

A spawn launcher pickles the Trainer, its callbacks included, into each worker process. A callback that holds a
closure or a lambda (Lightning's own ``EMAWeightAveraging`` holds ``get_ema_avg_fn``'s closure) fails there, after
the run folder was made, with a traceback that names a function and no callback. The command checks each callback
first and names it and the fix.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback

from lit_transfer._compat import pickles_for_workers

__all__ = ["check_callbacks_reach_workers"]


def check_callbacks_reach_workers(strategy: Any, callbacks: Sequence[Callback]) -> None:
    """Refuse a callback that cannot be pickled when the Trainer's ``strategy`` pickles it into its workers.

    Args:
        strategy: The Trainer's ``strategy`` argument (a name or a strategy object).
        callbacks: The callbacks the Trainer will get.

    Raises:
        ValueError: Naming the callback, why pickling failed, and the two ways out.
    """
    if not pickles_for_workers(strategy):
        return
    for callback in callbacks:
        try:
            pickle.dumps(callback)
        except Exception as err:  # pickling raises AttributeError, TypeError or PicklingError
            raise ValueError(_refusal(callback, err)) from None


def _refusal(callback: Any, err: Exception) -> str:
    name = type(callback).__name__
    return (
        f"The callback {name} cannot be sent to the worker processes of `strategy: ddp_spawn`, which pickles every"
        f" callback ({type(err).__name__}: {err}). Use `--trainer.strategy ddp` (it starts each worker as a new"
        f" process of the same command, so nothing is pickled), or give {name} only module-level functions and"
        " classes."
    )
