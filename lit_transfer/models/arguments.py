"""Constructor checks of the models: numbers in range and options that fit together, before anything is built.

Each error names the argument, echoes the value and says what to change.
"""

from __future__ import annotations

import math

from lit_transfer.errors import check_int, is_number

__all__ = [
    "check_arguments",
    "check_auto_owns_its_rates",
    "check_regressor_arguments",
    "check_task_arguments",
    "check_training_arguments",
]


def check_arguments(
    num_classes: int,
    class_names: list[str] | None,
    layer_decay: float | None,
    label_smoothing: float,
    mixup_alpha: float,
    cutmix_alpha: float,
    warmup_epochs: float,
) -> None:
    """Refuse constructor arguments out of range (``ValueError`` naming the argument and its value).

    Example:
        >>> check_arguments(3, None, layer_decay=1.5, label_smoothing=0, mixup_alpha=0, cutmix_alpha=0, warmup_epochs=1)
        Traceback (most recent call last):
        ...
        ValueError: `layer_decay` must be in (0, 1] (e.g. 0.65-0.9), got 1.5.
    """
    check_int("num_classes", num_classes, minimum=2)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but `num_classes` is {num_classes}; they must agree"
            " (the CLI links both from the DataModule)."
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}.")
    check_training_arguments(layer_decay, mixup_alpha, cutmix_alpha, warmup_epochs)


def check_training_arguments(
    layer_decay: float | None, mixup_alpha: float, cutmix_alpha: float, warmup_epochs: float
) -> None:
    """Refuse the training arguments every model has when out of range (``ValueError`` naming the argument)."""
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1] (e.g. 0.65-0.9), got {layer_decay!r}.")
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"`mixup_alpha` and `cutmix_alpha` must be >= 0, got {mixup_alpha!r}, {cutmix_alpha!r}.")
    if warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs!r}.")


def check_auto_owns_its_rates(policy: object, layer_decay: float | None, frozen_lr_mult: float) -> None:
    """Refuse ``layer_decay`` or ``frozen_lr_mult`` beside ``freeze: auto``, which sets every group's LR itself.

    AutoFreeze's plan multiplies each trained group's learning rate by its own layer decay under the head: a
    model-level decay on top would stack silently, so the plan's logged rates would not be the ones used.

    Example:
        >>> from lit_transfer.freezing import AutoFreeze
        >>> check_auto_owns_its_rates(AutoFreeze(), layer_decay=0.8, frozen_lr_mult=1.0)
        Traceback (most recent call last):
        ...
        ValueError: `freeze: auto` sets each layer group's learning rate itself ...
    """
    from lit_transfer.freezing import AutoFreeze

    if not isinstance(policy, AutoFreeze) or (layer_decay is None and frozen_lr_mult == 1.0):
        return
    given = [f"`{k}` ({v!r})" for k, v in (("layer_decay", layer_decay), ("frozen_lr_mult", frozen_lr_mult))]
    stacked = [g for g, on in zip(given, (layer_decay is not None, frozen_lr_mult != 1.0)) if on]
    raise ValueError(
        "`freeze: auto` sets each layer group's learning rate itself (its plan's decay under the trained head, set"
        f" with `AutoFreeze(layer_decay=...)`), so it does not stack with {' or '.join(stacked)}: unset"
        " them (`--model.layer_decay null --model.frozen_lr_mult 1`), or choose a fixed freezing policy."
    )


def check_regressor_arguments(
    num_outputs: int,
    target_names: list[str] | None,
    target_stats: dict[str, list[float]] | None,
    loss: str,
    huber_delta: float,
) -> None:
    """Refuse :class:`~lit_transfer.TransferRegressor` arguments that do not fit together.

    Example:
        >>> check_regressor_arguments(2, ["age", "height"], {"mean": [30.0], "std": [5.0]}, "mse", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: `target_stats` must be {"mean": [...], "std": [...]} with 2 number(s) each, ...
    """
    check_int("num_outputs", num_outputs, minimum=1, expected="an integer >= 1")
    if target_names is not None and len(target_names) != num_outputs:
        raise ValueError(
            f"`target_names` has {len(target_names)} names but `num_outputs` is {num_outputs}; they must agree"
            " (the CLI links both from the DataModule)."
        )
    if target_stats is not None:
        mean, std = (target_stats.get(k) if isinstance(target_stats, dict) else None for k in ("mean", "std"))
        sizes_ok = isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
        if not sizes_ok or len(mean) != num_outputs or len(std) != num_outputs:  # type: ignore[arg-type]
            sizes_ok = False
        values_ok = sizes_ok and all(
            is_number(v) and math.isfinite(v)
            for v in [*mean, *std]  # type: ignore[misc]
        )
        if not values_ok or not all(v > 0 for v in std):  # type: ignore[union-attr]
            raise ValueError(
                f'`target_stats` must be {{"mean": [...], "std": [...]}} with {num_outputs} number(s) each, every'
                " std positive and all finite (the DataModule's `target_stats`, computed on its training rows),"
                f" got {target_stats!r}."
            )
    losses = ("mse", "l1", "huber")
    if loss not in losses:
        raise ValueError(f"`loss` must be one of {', '.join(map(repr, losses))}, got {loss!r}.")
    if not is_number(huber_delta) or huber_delta <= 0:
        raise ValueError(f"`huber_delta` must be a positive number, got {huber_delta!r}.")


def check_task_arguments(
    task: str,
    num_classes: int,
    threshold: float,
    tune_threshold: str,
    pos_weight: str | list[float] | None,
) -> None:
    """Refuse a classifier ``task`` and its options that do not fit together (``ValueError`` naming the argument).

    Example:
        >>> check_task_arguments("binary", 3, threshold=0.5, tune_threshold="global", pos_weight=None)
        Traceback (most recent call last):
        ...
        ValueError: `task='binary'` needs `num_classes=2` (the DataModule's two classes; `class_names[1]` is the
        positive class), got 3. ...
    """
    tasks = ("multiclass", "multilabel", "binary")
    if task not in tasks:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, tasks))}, got {task!r}.")
    if task == "binary" and num_classes != 2:
        raise ValueError(
            f"`task='binary'` needs `num_classes=2` (the DataModule's two classes; `class_names[1]` is the positive"
            f" class), got {num_classes}. For more classes use `task='multiclass'`, or `task='multilabel'` for"
            " several labels per image."
        )
    if not is_number(threshold) or not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be a probability in (0, 1), got {threshold!r}.")
    modes = ("none", "global", "per_label")
    if tune_threshold not in modes:
        raise ValueError(f"`tune_threshold` must be one of {', '.join(map(repr, modes))}, got {tune_threshold!r}.")
    if pos_weight is None:
        return
    if task == "multiclass":
        raise ValueError(
            "`pos_weight` weighs the positives of a sigmoid loss: it needs `task='multilabel'` or `task='binary'`"
            f" (got `task='multiclass'`, `pos_weight={pos_weight!r}`). Leave `pos_weight` unset."
        )
    width = 1 if task == "binary" else num_classes
    if isinstance(pos_weight, str):
        if pos_weight != "auto":
            raise ValueError(
                f"`pos_weight` must be 'auto', a list of {width} positive numbers or None, got {pos_weight!r}."
            )
        return
    values = list(pos_weight)
    numbers = all(is_number(v) and v > 0 for v in values)
    if len(values) != width or not numbers:
        raise ValueError(
            f"`pos_weight` must hold {width} positive number{'s' if width > 1 else ''} (one per"
            f" {'label' if task == 'multilabel' else 'positive class'}), got {pos_weight!r}; or use 'auto'."
        )
