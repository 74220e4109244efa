"""The measurement :class:`~lit_transfer.freezing.AutoFreeze` decides from, and the application of its decision.

:class:`~lit_transfer.callbacks.LayerFreezing` calls :func:`plan_auto_freeze` at the start of the first fine-tuning
epoch. On rank 0 it measures each layer group's relative gradient norm ``||g|| / ||w||`` on a few fixed training
batches and counts training samples per class; the policy turns the numbers into a plan, which is broadcast so that
every DDP rank follows the same one. :func:`apply_lr_multipliers` then multiplies the plan's per-group factors into
the optimizer's param groups and every copy the LR schedulers keep (with
:func:`lit_transfer.optim.rescale.scale_learning_rates`, as the batch-size LR scaling does).

The measurement leaves training as it was:

* **No step, no gradient.** Gradients come from ``torch.autograd.grad``; no ``.grad`` is written, no optimizer or DDP
  gradient hook runs. ``requires_grad`` flags and every module's train/eval mode are restored.
* **No random draw.** The model runs in eval mode (BatchNorm uses its running statistics, no dropout), on a seeded
  subset of the training dataset drawn through a copy of its augmentation pipeline, inside a fork of the torch (CPU
  and CUDA), NumPy and Python generators: an auto run and its resume draw the same numbers before and after.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.data import default_collate

from lit_transfer.freezing.auto import AutoFreeze, AutoFreezePlan
from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.optim.rescale import scale_learning_rates, scheduler_configs_of
from lit_transfer.trainer_facts import loader_batch_size, train_loader
from lit_transfer.training_state import kept_training_state, seeded_rng

__all__ = [
    "apply_lr_multipliers",
    "check_measurable",
    "measurement_batches",
    "plan_auto_freeze",
    "relative_gradient_norms",
    "samples_per_class",
]


def check_measurable(trainer: Trainer) -> Any:
    """The training dataset, checked to be map-style (AutoFreeze draws a seeded subset of it).

    Raises:
        ValueError: Naming the dataset type and the fix.
    """
    dataset = getattr(train_loader(trainer), "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError(
            "AutoFreeze measures on a few samples of the training dataset and needs a map-style dataset (with"
            f" `__len__` and `__getitem__`); the train DataLoader has {type(dataset).__name__}. Use another `freeze`"
            " policy with an iterable dataset."
        )
    return dataset


def measurement_batches(trainer: Trainer, count: int, seed: int) -> list[Any]:
    """``count`` batches of a seeded subset of the training dataset, collated as the train DataLoader does.

    The samples go through a copy of the dataset's augmentation pipeline, reseeded with ``seed`` when the dataset
    can be (lit_transfer's datasets: ``seed_transform``), so the training pipeline's own generator does not move.
    Call inside :func:`lit_transfer.training_state.seeded_rng`.

    Raises:
        ValueError: When the train DataLoader has no map-style dataset to draw from.
    """
    loader = train_loader(trainer)
    dataset = _private_copy(check_measurable(trainer), seed)
    batch_size = loader_batch_size(loader) or 32
    permutation = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    order = permutation[: count * batch_size].tolist()
    collate = getattr(loader, "collate_fn", None) or default_collate
    return [collate([dataset[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]


def _private_copy(dataset: Any, seed: int) -> Any:
    """A shallow copy of ``dataset`` (and of the datasets it wraps) with its own, reseeded augmentation pipeline."""
    dataset = copy.copy(dataset)
    if hasattr(dataset, "transform"):
        dataset.transform = copy.deepcopy(dataset.transform)
    inner = getattr(dataset, "dataset", None)
    if inner is not None and hasattr(inner, "__getitem__"):  # torch's Subset and similar wrappers
        dataset.dataset = _private_copy(inner, seed)
    reseed = getattr(dataset, "seed_transform", None)
    if callable(reseed):
        reseed(seed)
    return dataset


def samples_per_class(trainer: Trainer, pl_module: LightningModule) -> float:
    """Training samples per class: the training dataset's length over the number of classes.

    The classes are the DataModule's or the module's ``num_classes`` (its hyper-parameter), else the distinct
    ``labels`` of the dataset, else 1 (a regression counts its samples).
    """
    dataset = getattr(train_loader(trainer), "dataset", None)
    size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
    classes = getattr(getattr(trainer, "datamodule", None), "num_classes", None)
    if not isinstance(classes, int):
        classes = getattr(pl_module, "hparams", {}).get("num_classes")
    if not isinstance(classes, int):
        labels = getattr(dataset, "labels", None)
        classes = len(set(labels)) if labels else 1
    return size / max(1, classes)


def _loss(pl_module: LightningModule, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The module's own evaluation loss, else cross-entropy for class indices, BCE for 0/1 targets, else MSE.

    The module's loss is its ``loss(outputs, targets_for_loss(targets, 0), "val")`` (lit_transfer's models: the
    task's loss without label smoothing or ``pos_weight``), else its ``eval_loss(outputs, targets)``.
    """
    loss, shape_targets = getattr(pl_module, "loss", None), getattr(pl_module, "targets_for_loss", None)
    if callable(loss) and callable(shape_targets):
        return loss(outputs, shape_targets(targets, 0), "val")  # type: ignore[no-any-return]
    loss_fn = getattr(pl_module, "eval_loss", None)
    if callable(loss_fn):
        return loss_fn(outputs, targets)  # type: ignore[no-any-return]
    if not targets.is_floating_point():
        return nn.functional.cross_entropy(outputs, targets)
    targets = targets.reshape(outputs.shape).to(outputs.dtype)
    if bool(((targets == 0) | (targets == 1)).all()):
        return nn.functional.binary_cross_entropy_with_logits(outputs, targets)
    return nn.functional.mse_loss(outputs, targets)


def relative_gradient_norms(
    pl_module: LightningModule, groups: Sequence[LayerGroup], batches: Sequence[Any]
) -> list[float]:
    """Each group's ``||g|| / ||w||`` for the mean gradient of the task loss over ``batches``, in eval mode.

    Batches are ``(inputs, targets, ...)``; the loss is the module's own when it has one (see :func:`_loss`). Every
    ``requires_grad`` flag and module mode is restored; no ``.grad`` is written.
    """
    params = [p for group in groups for p in group.params]
    sums = [torch.zeros_like(p) for p in params]
    with kept_training_state(pl_module), torch.enable_grad():
        pl_module.eval()
        for p in params:
            p.requires_grad_(True)
        for batch in batches:
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise ValueError(
                    "AutoFreeze measures on training batches of the form (inputs, targets, ...); the train"
                    f" DataLoader gives {type(batch).__name__}. Use another `freeze` policy, or a collate_fn"
                    " that returns (inputs, targets)."
                )
            inputs, targets = move_data_to_device((batch[0], batch[1]), pl_module.device)
            loss = _loss(pl_module, pl_module(inputs), targets)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for total, grad in zip(sums, grads):
                if grad is not None:
                    total.add_(grad.detach())
    norms: list[float] = []
    offset = 0
    for group in groups:
        count = len(group.params)
        grad_sq = sum(float(g.double().pow(2).sum()) for g in sums[offset : offset + count]) / len(batches) ** 2
        weight_sq = sum(float(p.detach().double().pow(2).sum()) for p in params[offset : offset + count])
        norms.append((grad_sq**0.5) / max(weight_sq**0.5, 1e-12))
        offset += count
    return norms


def plan_auto_freeze(
    trainer: Trainer, pl_module: LightningModule, groups: Sequence[LayerGroup], policy: AutoFreeze
) -> AutoFreezePlan:
    """Measure on rank 0, decide, broadcast: every rank gets (and keeps in ``policy.plan``) the same plan."""
    state: dict[str, Any] | None = None
    if trainer.is_global_zero:
        with seeded_rng(policy.seed):
            batches = measurement_batches(trainer, policy.measure_batches, policy.seed)
            norms = relative_gradient_norms(pl_module, groups, batches)
        plan = policy.decide(norms, samples_per_class(trainer, pl_module), trainer.current_epoch)
        state = plan.to_dict()
    state = trainer.strategy.broadcast(state, src=0)
    assert state is not None
    policy.load_state_dict({"plan": state})
    assert policy.plan is not None
    rank_zero_info(policy.plan.describe([g.name for g in groups]))
    return policy.plan


def apply_lr_multipliers(trainer: Trainer, groups: Sequence[LayerGroup], multipliers: Sequence[float]) -> bool:
    """Multiply each layer group's learning rates (optimizer and LR schedulers) by its multiplier.

    Every optimizer param group must lie inside one layer group (as the package's models build them: one or two
    param groups per layer group); one that mixes groups of different multipliers cannot follow them, so that
    optimizer is left unscaled with a warning.

    Returns:
        Whether every optimizer was scaled.
    """
    owner = {id(p): index for index, group in enumerate(groups) for p in group.params}
    scaled_all = True
    for optimizer in trainer.optimizers:
        factors: list[float] = []
        for param_group in optimizer.param_groups:
            found = {float(multipliers[owner[id(p)]]) for p in param_group["params"] if id(p) in owner}
            if len(found) > 1:
                break
            factors.append(found.pop() if found else 1.0)
        else:
            if any(f != 1.0 for f in factors):
                configs = scheduler_configs_of(trainer, optimizer)
                scale_learning_rates(optimizer, [cfg.scheduler for cfg in configs], factors)
            continue
        scaled_all = False
        rank_zero_warn(
            f"AutoFreeze: a param group of {type(optimizer).__name__} holds parameters of several layer groups, so its"
            " per-group learning-rate multipliers are not applied (only which groups train is). Build the optimizer"
            " with one param group per layer group (as TransferClassifier does) to get them."
        )
    return scaled_all
