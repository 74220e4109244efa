"""Every private attribute of Lightning, LightningCLI and torch that lit_transfer relies on, in one place.

Lightning and torch offer no public API for a few things the package needs (replacing a DataLoader in the middle of
``fit``, reading DDP's ``find_unused_parameters``, a OneCycleLR's phase table). Each such access is one named
function here, and ``tests/test_compat.py`` has one test per function against the installed releases, so an
upgrade that renames or removes one fails that obvious test instead of a user's run.

The :class:`~lit_transfer.cli.app.TransferCLI` overrides a few private LightningCLI methods; they are listed in
:data:`LIGHTNING_CLI_OVERRIDES` with the parameters the override relies on, and checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, Strategy, StrategyRegistry
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "LIGHTNING_CLI_OVERRIDES",
    "PER_GROUP_LR_LISTS",
    "child_schedulers",
    "ema_decay",
    "hub_offline",
    "is_accumulating",
    "metric_update_count",
    "one_cycle_phases",
    "pickles_for_workers",
    "replace_loop_dataloaders",
    "reset_fit_loop_data",
    "reset_logged_results",
    "rewrap_ddp",
    "set_scheduler_last_lr",
    "track_average_swaps",
    "unswap_average",
    "unwrapped_sampler",
]

LIGHTNING_CLI_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_prepare_subcommand_parser": ("klass", "subcommand"),
    "_parse_ckpt_path": (),
    "_instantiate_trainer": ("config", "callbacks"),
    "_subcommand_method_arguments": (),
    "_add_subcommands": ("parser",),
    "_run_subcommand": ("subcommand",),
}
"""Private LightningCLI members :class:`~lit_transfer.cli.app.TransferCLI` overrides or reads, with the parameters it
relies on (``_subcommand_method_arguments`` is a dict attribute, the others are methods)."""

PER_GROUP_LR_LISTS = ("base_lrs", "_last_lr", "min_lrs", "max_lrs")
"""torch LR-scheduler attributes that are lists with one absolute learning rate per param group (``_last_lr`` is
what ``get_last_lr()`` returns; ``min_lrs`` belongs to ReduceLROnPlateau, ``max_lrs`` to CyclicLR)."""


def rewrap_ddp(strategy: Strategy) -> bool:
    """Wrap a DDP strategy's module in a new ``DistributedDataParallel``, which registers the parameters trainable now.

    DDP builds its gradient buckets once, from the parameters that require grad when it wraps the module; a
    parameter unfrozen later would never be averaged across processes. The new wrapper is built by the strategy's
    own public ``configure_ddp`` (its ``ddp_kwargs`` and communication hooks included), after the old one's reducer
    has had its autograd hooks removed (``DistributedDataParallel._remove_autograd_hooks``). Lightning's flag for
    the first static-graph iteration of manual optimization (``DDPStrategy._pl_static_graph_delay_done``) is reset,
    since the new wrapper starts its first iteration again. Call it on every process at the same point, between
    optimizer steps: building the wrapper broadcasts rank 0's parameters and buffers.

    Returns:
        ``True`` when the module was wrapped again, ``False`` when the strategy's model is not wrapped in DDP.
    """
    model = strategy.model
    if not isinstance(strategy, DDPStrategy) or not isinstance(model, DistributedDataParallel):
        return False
    model._remove_autograd_hooks()
    strategy.model = model.module
    strategy.configure_ddp()
    if hasattr(strategy, "_pl_static_graph_delay_done"):
        strategy._pl_static_graph_delay_done = False
    return True


def is_accumulating(trainer: Trainer) -> bool:
    """Whether the current training batch accumulates gradients without an optimizer step.

    Calls ``trainer.fit_loop.epoch_loop._should_accumulate()``, the test Lightning's own loop uses.
    """
    return bool(trainer.fit_loop.epoch_loop._should_accumulate())


def replace_loop_dataloaders(loop: Any, replace: Callable[[list[Any]], list[Any] | None]) -> bool:
    """Swap the DataLoaders an evaluation or fit loop iterates, in the middle of ``fit``, and restart its iterator.

    Reads and writes ``loop._combined_loader.flattened`` and restarts ``loop._data_fetcher``: the objects
    Lightning itself iterates. Lightning has no public hook for this.

    Args:
        loop: ``trainer.fit_loop`` or ``trainer.validate_loop`` (any loop with a combined loader).
        replace: Given the current loaders, returns their replacements (same number), or ``None`` to keep them.

    Returns:
        ``True`` when the loaders were replaced, ``False`` when the loop has no data or ``replace`` kept them.
    """
    combined = getattr(loop, "_combined_loader", None)
    if combined is None:  # no data for this loop (e.g. `limit_val_batches=0`)
        return False
    replaced = replace(list(combined.flattened))
    if replaced is None:
        return False
    combined.flattened = replaced
    fetcher = getattr(loop, "_data_fetcher", None)
    if fetcher is not None:
        iter(fetcher)  # the fetcher's iterator was created over the old loaders
    return True


def loop_dataloaders(loop: Any) -> list[Any]:
    """The DataLoaders a fit or evaluation loop iterates now (``loop._combined_loader.flattened``; none unset)."""
    combined = getattr(loop, "_combined_loader", None)
    return [] if combined is None else list(combined.flattened)


def unwrapped_sampler(sampler: Any) -> Any:
    """The sampler Lightning's ``DistributedSamplerWrapper`` wraps under DDP (``.dataset._sampler``), else ``sampler``.

    Lightning wraps a training sampler that is not a ``DistributedSampler`` (e.g. torch's ``WeightedRandomSampler``)
    in one that shards its draws across the processes.
    """
    if isinstance(sampler, DistributedSamplerWrapper):
        return sampler.dataset._sampler  # type: ignore[attr-defined]  # Lightning's _DatasetSamplerWrapper
    return sampler


def set_received_sigterm(trainer: Any) -> None:
    """Tell the Trainer's loops that SIGTERM arrived (``_SignalConnector.received_sigterm``): they stop gracefully."""
    trainer._signal_connector.received_sigterm = True


def stop_spawned_workers(trainer: Any, signum: int) -> bool:
    """Send ``signum`` to the worker processes a spawn launcher (``strategy: ddp_spawn``) started from this process.

    Lightning's ``_MultiProcessingLauncher`` keeps its workers in ``procs`` in the launching process only (a worker's
    copy has none) and sends them a signal with its ``kill``, as its own SIGTERM notifier does for other launchers.

    Returns:
        Whether this process launched spawned workers that still ran (and were signalled).
    """
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    if not isinstance(launcher, _MultiProcessingLauncher) or not any(p.is_alive() for p in launcher.procs):
        return False
    launcher.kill(signum)
    return True


def pickles_for_workers(strategy: Any) -> bool:
    """Whether a Trainer with this ``strategy`` argument pickles itself, callbacks included, into worker processes.

    Lightning's DDP strategies start their workers by the ``start_method`` of their registry entry (a name such as
    ``"ddp_spawn"``) or of the strategy object (``DDPStrategy._start_method``): ``"spawn"`` and ``"forkserver"``
    pickle the Trainer into each worker; ``"popen"`` (``ddp``) runs the command again and ``"fork"`` copies the
    process, so neither pickles.
    """
    if isinstance(strategy, str):
        entry = dict.get(StrategyRegistry, strategy, {})  # the registry's own `get` builds the strategy
        start_method = entry.get("init_params", {}).get("start_method")
    else:
        start_method = getattr(strategy, "_start_method", None) if isinstance(strategy, DDPStrategy) else None
    return start_method in ("spawn", "forkserver")


def ema_decay(callback: Any) -> float | None:
    """The decay of a Lightning ``WeightAveraging`` callback's exponential average, or ``None`` without one.

    ``EMAWeightAveraging`` keeps no ``decay`` attribute: it passes torch's ``get_ema_avg_fn(decay)`` to
    ``WeightAveraging``, which keeps it in ``_kwargs["avg_fn"]``. That function returns ``decay * average + (1 -
    decay) * current``, so its value at ``average=1, current=0`` is the decay.
    """
    import torch

    average = getattr(callback, "_kwargs", {}).get("avg_fn")
    if not callable(average):
        return None
    return float(average(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), 1))


class _CountedSwap:
    """A ``WeightAveraging`` callback's ``_swap_models``, remembering whether the model holds the average now."""

    def __init__(self, callback: Any) -> None:
        self.callback = callback
        self.swapped = False

    def __call__(self, pl_module: Any) -> None:
        type(self.callback)._swap_models(self.callback, pl_module)
        self.swapped = not self.swapped


def track_average_swaps(callback: Any) -> None:
    """Make a Lightning ``WeightAveraging`` callback remember when its average sits in the model (see below).

    ``WeightAveraging`` swaps the values of the model's and its ``AveragedModel``'s parameters and buffers at the
    start of each validation epoch and back at its end, both through ``_swap_models``; it records nothing of it. An
    exception between the two (a SIGTERM or Ctrl-C during validation, a broken validation image) leaves them swapped.
    This wraps the callback's ``_swap_models`` (on the instance; idempotent) so :func:`unswap_average` can tell.
    """
    if not isinstance(vars(callback).get("_swap_models"), _CountedSwap):
        callback._swap_models = _CountedSwap(callback)


def unswap_average(callback: Any, pl_module: Any) -> bool:
    """Swap back a ``WeightAveraging`` callback's average and the model's weights if a validation left them swapped.

    Only a callback :func:`track_average_swaps` wrapped is known. Returns whether it swapped them back.
    """
    swap = vars(callback).get("_swap_models")
    if not isinstance(swap, _CountedSwap) or not swap.swapped:
        return False
    swap(pl_module)
    return True


STOP_SIGNALS_PID_ENV = "LIT_TRANSFER_STOP_SIGNALS_PID"
"""Set by the ``lit-transfer`` command (its :class:`~lit_transfer.cli.interrupts.StopSignals`) to its process id:
the process that handles a stop signal by stopping its ``ddp_spawn`` workers and reporting (spawned workers inherit
it)."""


def tell_spawn_launcher(trainer: Any, signum: int) -> bool:
    """In a ``ddp_spawn`` worker: send ``signum`` to the launching process, if it still runs and handles it.

    A spawned worker stopped by a signal sends its launcher no result, and the launcher (Lightning's
    ``_MultiProcessingLauncher``, waiting in ``launch``) would wait for it forever. Only a launcher that said it
    handles stop signals (:data:`STOP_SIGNALS_PID_ENV` is its process id) and is still this worker's parent is told.

    Returns:
        Whether the launching process was signalled.
    """
    import multiprocessing
    import os

    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    parent = multiprocessing.parent_process()
    if not isinstance(launcher, _MultiProcessingLauncher) or parent is None or parent.pid is None:
        return False
    if os.environ.get(STOP_SIGNALS_PID_ENV) != str(parent.pid) or os.getppid() != parent.pid:
        return False  # a launcher that would not handle it (a user's script), or one that has already ended
    os.kill(parent.pid, signum)
    return True


def replace_sigterm_notifier(trainer: Any, notifier: Callable[[int, Any], None] | None) -> None:
    """Make the Trainer's signal connector register ``notifier`` for SIGTERM instead of its own (``None``: its own).

    Lightning's ``_SignalConnector.register_signal_handlers`` (run as each ``fit``/``validate``/``test``/``predict``
    starts its loops) installs ``self._sigterm_notifier_fn``, then any handler installed before; an instance attribute
    of that name takes the method's place.
    """
    connector = trainer._signal_connector
    if notifier is not None:
        connector._sigterm_notifier_fn = notifier
    else:
        vars(connector).pop("_sigterm_notifier_fn", None)


def child_schedulers(scheduler: Any) -> Iterator[Any]:
    """The schedulers a ``SequentialLR`` or ``ChainedScheduler`` wraps (``_schedulers``); nothing for others."""
    yield from getattr(scheduler, "_schedulers", None) or []


def set_scheduler_last_lr(scheduler: Any, values: Sequence[Any]) -> None:
    """Set what ``scheduler.get_last_lr()`` returns (``_last_lr``), one value per param group."""
    scheduler._last_lr = list(values)


def one_cycle_phases(scheduler: Any) -> list[dict[str, Any]]:
    """A ``OneCycleLR``'s phase table (``_schedule_phases``): dicts with ``end_step`` and the LR/momentum keys."""
    return scheduler._schedule_phases


def metric_update_count(metric: Any) -> int:
    """How many times a torchmetrics ``Metric`` was updated since its last reset (``Metric._update_count``)."""
    return int(metric._update_count)


def reset_fit_loop_data(loop: Any) -> None:
    """Tear down a fit loop's data fetcher and forget its combined loader, so the next ``run`` sets up both anew.

    Lightning's fit loop keeps them in ``_data_fetcher`` and ``_combined_loader`` and sets them up only when they are
    missing; a caller that ran the loop itself (the LR range test) leaves them consumed.
    """
    if loop._data_fetcher is not None:
        loop._data_fetcher.teardown()
        loop._data_fetcher = None
    loop._combined_loader = None


def reset_logged_results(trainer: Trainer) -> None:
    """Forget every value logged with ``self.log`` so far and the metrics derived from them.

    Calls the logger connector's ``reset_results`` and ``reset_metrics``.
    """
    trainer._logger_connector.reset_results()
    trainer._logger_connector.reset_metrics()


@contextmanager
def hub_offline(offline: bool = True) -> Iterator[None]:
    """huggingface_hub's offline mode for the calls made inside, when ``offline`` (else nothing changes).

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, into ``huggingface_hub.constants.HF_HUB_OFFLINE``, and
    its downloads consult that attribute at each call (cache only, no request, no retries). There is no public
    switch; this sets the attribute for the duration and restores it.
    """
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
