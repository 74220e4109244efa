"""OptimizerSwap: replace the optimizer mid-training (e.g. Adam -> SGD), resumably."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer
from typing_extensions import override

from lit_transfer.callbacks import _swats
from lit_transfer.errors import check_int, is_number
from lit_transfer.optim.rescale import rebind_scheduler, scale_learning_rates, scheduler_configs_of
from lit_transfer.trainer_facts import param_group_name

OptimizerCallable = Callable[[Iterable[Any]], Optimizer]
"""Builds an optimizer from param groups: ``functools.partial(torch.optim.SGD, momentum=0.9)``, or LightningCLI's
``OptimizerCallable`` (YAML ``{class_path: torch.optim.SGD, init_args: {momentum: 0.9}}``)."""

_HOW = (
    "pass a torch.optim.Optimizer subclass, its class path (e.g. 'torch.optim.SGD') or a callable that builds one"
    " from param groups (e.g. functools.partial(torch.optim.SGD, momentum=0.9))"
)


def _resolve(optimizer: str | type) -> type[Optimizer]:
    cls: Any = optimizer
    if isinstance(optimizer, str):
        module, _, name = optimizer.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module or "torch.optim"), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"`optimizer` names no importable class: {optimizer!r} ({err}); {_HOW}.") from err
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer subclass, got {optimizer!r}: {_HOW}.")
    return cls


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _split_partial(optimizer: Any) -> tuple[type[Optimizer], dict[str, Any]] | None:
    """``(class, kwargs)`` of ``functools.partial(cls, **kwargs)`` over an Optimizer class, else ``None``."""
    if isinstance(optimizer, functools.partial) and isinstance(optimizer.func, type) and not optimizer.args:
        return _resolve(optimizer.func), dict(optimizer.keywords)
    return None


class OptimizerSwap(Callback):
    r"""Swap the optimizer for another class from an epoch, a step, or when SWATS says so.

    Keskar & Socher 2017, "Improving Generalization Performance by Switching from Adam to SGD" (SWATS): Adam's
    fast start, SGD's generalisation. With ``criterion="swats"`` the switch point and each group's SGD learning
    rate come from the projection of Adam's step :math:`p_k` on the gradient :math:`g_k`,
    :math:`\gamma_k = p_k^\top p_k / (-p_k^\top g_k)`, averaged as
    :math:`\lambda_k = \beta_2\lambda_{k-1} + (1-\beta_2)\gamma_k`; the switch happens once the whole-model estimate
    has :math:`|\lambda_k/(1-\beta_2^k) - \gamma_k| < \epsilon` (``k > 1``), and each group's SGD LR is its own
    :math:`\lambda_k/(1-\beta_2^k)`. Under DDP rank 0 decides and broadcasts.

    The new optimizer keeps every param group (same parameters, order, names, ``lr_scale``, weight decay and
    scheduler keys; frozen groups included); only the old class's hyper-parameters are replaced by the new
    class's defaults and ``optimizer_kwargs``. Every LR scheduler is rebound to the new optimizer at its
    current position, its base LRs rescaled with the group LRs. Triggers mean "from then on": a run resumed
    past the trigger rebuilds the swapped optimizer in ``on_fit_start`` (before Lightning restores optimizer
    states), so the checkpointed state loads into the right class.

    The new optimizer is given as a class, a class path, or a callable that builds it from param groups
    (``functools.partial(torch.optim.SGD, momentum=0.9)``, or LightningCLI's ``OptimizerCallable``, the convention of
    ``TransferClassifier(optimizer=...)``). A class or a ``partial`` of one is recorded in the checkpoint as class path
    and arguments; another callable is recorded by the class it built, and a resumed run must pass the same callable.

    Args:
        optimizer: The new optimizer's class, its class path (``"torch.optim.SGD"``), or a callable
            ``params -> Optimizer``.
        optimizer_kwargs: Constructor arguments for a class or class path (e.g. ``{"momentum": 0.9,
            "nesterov": True}``); a callable carries its own.
        at_epoch: Swap at the start of this epoch.
        at_step: Swap before this optimizer step (``trainer.global_step``).
        criterion: ``"swats"`` to swap when the SWATS criterion is met (needs an Adam-family optimizer).
        lr: ``"keep"`` keeps each group's LR; a float sets the first group's LR and scales the others in
            proportion; ``"swats"`` uses each group's SWATS estimate. ``None`` means ``"swats"`` with the SWATS
            criterion, else ``"keep"``.
        swats_eps: The SWATS tolerance :math:`\epsilon`.
    """

    def __init__(
        self,
        optimizer: str | type[Optimizer] | OptimizerCallable = "torch.optim.SGD",
        optimizer_kwargs: dict[str, Any] | None = None,
        at_epoch: int | None = None,
        at_step: int | None = None,
        criterion: Literal["swats"] | None = None,
        lr: float | Literal["keep", "swats"] | None = None,
        swats_eps: float = 1e-9,
    ) -> None:
        self._set_optimizer(optimizer, optimizer_kwargs)
        triggers = {"at_epoch": at_epoch, "at_step": at_step, "criterion": criterion}
        chosen = [name for name, value in triggers.items() if value is not None]
        if len(chosen) != 1:
            raise ValueError(f"Set exactly one trigger of `at_epoch`, `at_step`, `criterion`; got {triggers}.")
        for name, value in (("at_epoch", at_epoch), ("at_step", at_step)):
            if value is not None:
                check_int(name, value, minimum=0)
        if criterion not in (None, "swats"):
            raise ValueError(f"`criterion` must be 'swats' or None, got {criterion!r}.")
        if lr is None:
            lr = "swats" if criterion == "swats" else "keep"
        if lr == "swats" and criterion != "swats":
            raise ValueError("`lr='swats'` needs `criterion='swats'`.")
        if not (lr in ("keep", "swats") or (is_number(lr) and lr > 0)):
            raise ValueError(f"`lr` must be a positive float, 'keep' or 'swats', got {lr!r}.")
        if swats_eps <= 0:
            raise ValueError(f"`swats_eps` must be > 0, got {swats_eps!r}.")
        self.at_epoch, self.at_step, self.criterion = at_epoch, at_step, criterion
        self.lr, self.swats_eps = lr, swats_eps
        self._reset_state()

    def _set_optimizer(self, optimizer: Any, optimizer_kwargs: dict[str, Any] | None) -> None:
        """Record how to build the new optimizer: ``optimizer_class`` + ``optimizer_kwargs``, or ``_callable``."""
        self._callable: OptimizerCallable | None = None
        self._expected_class: str | None = None  # the class a resumed callable must build
        if isinstance(optimizer, (str, type)):
            self.optimizer_class: type[Optimizer] | None = _resolve(optimizer)
            self.optimizer_kwargs: dict[str, Any] | None = dict(optimizer_kwargs or {})
            return
        if not callable(optimizer):
            raise TypeError(f"`optimizer` must be a class, class path or callable, got {optimizer!r}: {_HOW}.")
        if optimizer_kwargs:
            raise ValueError(
                f"`optimizer_kwargs` ({optimizer_kwargs!r}) is for a class or class path; the callable {optimizer!r}"
                " carries its own arguments: put them in it (e.g. functools.partial(torch.optim.SGD, momentum=0.9))."
            )
        split = _split_partial(optimizer)
        if split is not None:  # a partial over a class: as plain in the checkpoint as a class path
            self.optimizer_class, self.optimizer_kwargs = split[0], split[1]
        else:
            self.optimizer_class, self.optimizer_kwargs, self._callable = None, None, optimizer

    def _build(self, groups: list[dict[str, Any]]) -> Optimizer:
        if self._callable is None:
            assert self.optimizer_class is not None and self.optimizer_kwargs is not None
            return self.optimizer_class(groups, **self.optimizer_kwargs)
        new = self._callable(groups)
        if not isinstance(new, Optimizer):
            raise TypeError(
                f"`optimizer` {self._callable!r} returned {type(new).__name__}, not a torch.optim.Optimizer: {_HOW}."
            )
        if self._expected_class is not None and _class_path(type(new)) != self._expected_class:
            raise ValueError(
                f"The checkpoint was swapped to {self._expected_class}, but `optimizer` {self._callable!r} builds"
                f" {_class_path(type(new))}: resume with the optimizer the checkpoint was trained with."
            )
        return new

    def _describe(self) -> str:
        if self._callable is not None:
            return repr(self._callable)
        assert self.optimizer_class is not None
        return f"{self.optimizer_class.__name__}({self.optimizer_kwargs})"

    def _reset_state(self) -> None:
        self._expected_class = None
        self.swapped = False
        self.swapped_class: str | None = None
        self.swap_step: int | None = None
        self.swap_lrs: list[float] | None = None
        self.swats = _swats.SwatsState()
        self._pending = False
        self._before: list | None = None

    # --------------------------------------------------------------------------------------------- checks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset_state()
        strategy = type(trainer.strategy).__name__
        if any(key in strategy for key in ("DeepSpeed", "FSDP", "ModelParallel")):
            raise ValueError(
                f"OptimizerSwap replaces the optimizer, which `{strategy}` owns: either remove OptimizerSwap or use"
                " a single-device or DDP strategy."
            )

    # ----------------------------------------------------------------------------------------------- swap
    def _new_groups(self, old: Optimizer) -> list[dict[str, Any]]:
        keep = {"params", "lr", "weight_decay"}
        return [{k: v for k, v in g.items() if k in keep or k not in old.defaults} for g in old.param_groups]

    def _target_lrs(self, old: Optimizer) -> list[float]:
        current = [float(g["lr"]) for g in old.param_groups]
        if self.lr == "keep":
            return current
        if self.lr == "swats":
            estimates = [self.swats.corrected(i, float(g["betas"][1])) for i, g in enumerate(old.param_groups)]
            ratios = [e / c for e, c in zip(estimates, current) if e > 0 and c > 0]
            mean_ratio = sum(ratios) / len(ratios) if ratios else 1.0  # groups without an estimate follow the mean
            return [e if e > 0 else c * mean_ratio for e, c in zip(estimates, current)]
        return [float(self.lr) * c / current[0] if current[0] else float(self.lr) for c in current]

    def _swap(self, trainer: pl.Trainer, lrs: list[float] | None) -> None:
        old = trainer.optimizers[0]
        new = self._build(self._new_groups(old))
        configs = scheduler_configs_of(trainer, old)
        for cfg in configs:
            rebind_scheduler(cfg.scheduler, old, new)
        if lrs is not None:
            factors = [t / float(g["lr"]) if g["lr"] else 1.0 for t, g in zip(lrs, new.param_groups)]
            scale_learning_rates(new, [cfg.scheduler for cfg in configs], factors)
        old.state.clear()  # nothing may keep the old optimizer's buffers alive
        trainer.strategy.optimizers = [new, *trainer.optimizers[1:]]
        self.swapped = True
        self.swapped_class = _class_path(type(new))

    def _do_swap(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str) -> None:
        old = trainer.optimizers[0]
        lrs = self._target_lrs(old)
        self._swap(trainer, lrs)
        self.swap_step, self.swap_lrs = trainer.global_step, lrs
        names = [param_group_name(g, i) for i, g in enumerate(old.param_groups)]
        rank_zero_info(
            f"OptimizerSwap: {reason}: {type(old).__name__} -> {self._describe()} at step {trainer.global_step}, LRs "
            + ", ".join(f"{n}={lr:.4g}" for n, lr in zip(names, lrs))
        )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.criterion == "swats" and "betas" not in trainer.optimizers[0].defaults:
            raise ValueError(
                f"OptimizerSwap(criterion='swats') needs an Adam-family optimizer with `betas`, got"
                f" {type(trainer.optimizers[0]).__name__}: either configure Adam/AdamW or use `at_epoch`/`at_step`."
            )
        if self.swapped:  # restored: rebuild the target class; Lightning loads its state right after this hook
            self._swap(trainer, None)
            rank_zero_info(
                f"OptimizerSwap: resumed after the swap; optimizer is {type(trainer.optimizers[0]).__name__}."
            )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.swapped and self.at_epoch is not None and trainer.current_epoch >= self.at_epoch:
            self._do_swap(trainer, pl_module, f"epoch {trainer.current_epoch} >= at_epoch={self.at_epoch}")

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.swapped:
            return
        if self.at_step is not None and trainer.global_step >= self.at_step:
            self._do_swap(trainer, pl_module, f"step {trainer.global_step} >= at_step={self.at_step}")
        elif self._pending:
            self._do_swap(trainer, pl_module, "SWATS criterion met")
        else:
            return
        pl_module.log("optimizer_swap/swapped", 1.0, on_step=True, on_epoch=False)

    # ---------------------------------------------------------------------------------------------- SWATS
    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if self.criterion == "swats" and not self.swapped and not self._pending:
            self._before = _swats.snapshot(optimizer)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._before is None:
            return
        optimizer, before, self._before = trainer.optimizers[0], self._before, None
        _swats.update(self.swats, optimizer, before)  # per-group estimates: the SGD LRs
        met = _swats.update_model(self.swats, optimizer, before, self.swats_eps)
        met = bool(trainer.strategy.broadcast(met, src=0))
        self._pending = met
        for i, group in enumerate(optimizer.param_groups):
            gamma = self.swats.gammas[i]
            if gamma is not None:
                name = param_group_name(group, i)
                pl_module.log(f"optimizer_swap/gamma/{name}", gamma, on_step=True, on_epoch=False)
                estimate = self.swats.corrected(i, float(group["betas"][1]))
                pl_module.log(f"optimizer_swap/lambda/{name}", estimate, on_step=True, on_epoch=False)
        if met:  # all ranks use rank 0's estimates
            self.swats.lambdas = list(trainer.strategy.broadcast(self.swats.lambdas, src=0))

    # ---------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "swapped": self.swapped,
            # the class swapped to (or to swap to); kwargs `None`: built by a callable, which a resume must pass again
            "optimizer": self.swapped_class or (_class_path(self.optimizer_class) if self.optimizer_class else None),
            "optimizer_kwargs": None if self.optimizer_kwargs is None else dict(self.optimizer_kwargs),
            "swap_step": self.swap_step,
            "swap_lrs": self.swap_lrs,
            "pending": self._pending,
            "swats_lambdas": list(self.swats.lambdas),
            "swats_steps": list(self.swats.steps),
            "swats_model": [self.swats.model_lambda, self.swats.model_steps],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.swapped = bool(state_dict["swapped"])
        if self.swapped:  # the checkpoint's optimizer state belongs to the class it was swapped to
            self.swapped_class = state_dict["optimizer"]
            if state_dict["optimizer_kwargs"] is not None:
                self._set_optimizer(_resolve(state_dict["optimizer"]), dict(state_dict["optimizer_kwargs"]))
            elif self._callable is None:
                raise ValueError(
                    f"The checkpoint was swapped to {state_dict['optimizer']} by a callable `optimizer`, but this"
                    f" OptimizerSwap builds {self._describe()}: resume with the callable the checkpoint was trained"
                    " with."
                )
            else:
                self._expected_class = state_dict["optimizer"]
        self.swap_step, self.swap_lrs = state_dict.get("swap_step"), state_dict.get("swap_lrs")
        self._pending = bool(state_dict.get("pending", False))
        lambdas, steps = state_dict.get("swats_lambdas", []), state_dict.get("swats_steps", [])
        model_lambda, model_steps = state_dict.get("swats_model", [0.0, 0])
        self.swats = _swats.SwatsState(
            list(lambdas), list(steps), [None] * len(lambdas), float(model_lambda), int(model_steps)
        )
