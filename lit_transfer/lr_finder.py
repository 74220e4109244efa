"""A learning-rate finder that keeps layer-wise LR ratios and trains only what the first freezing phase trains.

Lightning's ``Tuner.lr_find`` and ``LearningRateFinder`` give every param group the same LR during the sweep (the
layer-decay ratios are lost) and sweep the whole model; fastai's ``lr_find`` suggests one LR for all groups too.
Here the range test (:mod:`lit_transfer.lr_range_test`) multiplies every group's LR by one common factor, so a
``layer_decay`` or ``frozen_lr_mult`` keeps its ratios, and :class:`~lit_transfer.callbacks.LayerFreezing` keeps
the groups the policy's first phase freezes frozen. ``min_lr``, ``max_lr`` and the suggestion refer to the
optimizer's configured LR (the head's; ``--model.optimizer.init_args.lr`` on the command line).

Three ways in:

* :func:`find_lr` ``(model, datamodule)`` runs the test and returns an :class:`LRFinderResult`; the model, its
  RNG and everything else are left exactly as they were, so a ``fit`` after it equals a ``fit`` without it.
* :class:`GroupLRFinder`, a callback: runs the test at the start of ``fit`` and trains with the suggestion (every
  group's LR scaled by the same factor). Works in any Lightning project and in a YAML recipe's
  ``trainer.callbacks``.
* ``lit-transfer lr-find --config ...``: the same model, data and trainer as ``fit``; writes the plot and the CSV
  into ``<run>/lr_find/`` and prints the override to paste (see ``docs/lr-finder.md``).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer._schedulers import scale_learning_rates
from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.lr_range_test import RangeTestCurve, callbacks_of, check_range, reference_lr, run_range_test
from lit_transfer.lr_suggest import DEFAULT_RULE, DEFAULT_SMOOTHING, RULES, smooth_losses, suggest_lr
from lit_transfer.trainer_facts import param_group_name

__all__ = ["GroupLRFinder", "LRFinderResult", "find_lr"]

CSV_NAME = "loss_vs_lr.csv"
PLOT_NAME = "loss_vs_lr.png"


@dataclass
class LRFinderResult:
    """The outcome of an LR range test.

    Attributes:
        lrs: The reference LR (the optimizer's configured ``lr``, the head's) at each step.
        losses: The training loss at each step (mean over ranks).
        smoothed: The smoothed losses the suggestion is read from.
        rule: The suggestion rule (``"valley"``, ``"steep"`` or ``"minimum"``).
        suggestion: The suggested reference LR, or ``None`` when the curve was too short to tell.
        suggestions: What each rule suggests.
        configured_lr: The optimizer's configured LR before the test.
        group_ratios: Each param group's LR divided by the configured LR (kept during the test and by the
            suggestion), by group name.
        trainable_groups: ``"k/n"``: the layer groups the first phase trains, or ``None`` without LayerFreezing.
        stopped_early: Whether the test stopped before ``num_steps`` because the loss diverged.
        seconds: Wall time of the test.
        plot_path: The PNG written by :meth:`save` (``None`` until then).
        csv_path: The CSV written by :meth:`save`.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    rule: str
    suggestion: float | None
    suggestions: dict[str, float | None]
    configured_lr: float
    group_ratios: dict[str, float] = field(default_factory=dict)
    trainable_groups: str | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    plot_path: Path | None = None
    csv_path: Path | None = None

    def group_lrs(self, lr: float | None = None) -> dict[str, float]:
        """Each param group's LR when the configured LR is ``lr`` (default: the suggestion)."""
        value = self.suggestion if lr is None else lr
        if value is None:
            return {}
        return {name: value * ratio for name, ratio in self.group_ratios.items()}

    def to_csv(self, path: str | Path) -> Path:
        """Write ``step, lr, loss, smoothed_loss`` rows (one per step) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "lr", "loss", "smoothed_loss"])
            for step, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed)):
                writer.writerow([step, f"{lr:.6g}", f"{loss:.6g}", f"{smooth:.6g}"])
        return path

    def plot(self, path: str | Path) -> Path:
        """Draw the loss against the LR (log scale), marking each rule's suggestion; save a PNG to ``path``."""
        from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot's state stays untouched

        fig = Figure(figsize=(6.4, 3.8), dpi=100, layout="constrained")
        ax = fig.subplots()
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", linewidth=2, label="smoothed loss")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:
            low, high = min(finite), max(finite)
            first = finite[0]
            ax.set_ylim(low - 0.1 * (high - low) - 1e-3, max(first, low) + 0.6 * (max(first, low) - low) + 1e-3)
        for index, rule in enumerate(RULES):
            lr = self.suggestions.get(rule)
            if lr is None:
                continue
            chosen = rule == self.rule
            ax.axvline(
                lr,
                color="C3" if chosen else f"C{index + 4}",
                linestyle="-" if chosen else ":",
                linewidth=2 if chosen else 1,
                label=f"{rule}: {lr:.2g}" + (" (suggested)" if chosen else ""),
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (configured lr; every group keeps its ratio)")
        ax.set_ylabel("training loss")
        phase = f", first phase: {self.trainable_groups} groups train" if self.trainable_groups else ""
        ax.set_title(f"LR range test{phase}", fontsize=10)
        ax.legend(fontsize=8)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path

    def save(self, out_dir: str | Path) -> Path:
        """Write :data:`CSV_NAME` and :data:`PLOT_NAME` into ``out_dir``; return ``out_dir``."""
        out = Path(out_dir)
        self.csv_path = self.to_csv(out / CSV_NAME)
        self.plot_path = self.plot(out / PLOT_NAME)
        return out

    def summary(self) -> str:
        """A few lines for people: the suggestion and each group's LR at it."""
        if self.suggestion is None:
            return (
                f"LR range test: no suggestion from {len(self.lrs)} steps (the curve is too short or not finite):"
                " widen `min_lr`/`max_lr` or raise `num_steps`."
            )
        lines = [f"LR range test: suggested lr {self.suggestion:.2g} ({self.rule} rule, {len(self.lrs)} steps)"]
        if self.trainable_groups:
            lines.append(f"  first phase trains {self.trainable_groups} layer groups")
        named = {name: lr for name, lr in self.group_lrs().items() if not name.endswith(".no_decay")}
        groups = ", ".join(f"{name} {lr:.2g}" for name, lr in named.items())
        if groups:
            lines.append(f"  group LRs at the suggestion: {groups}")
        return "\n".join(lines)


def _result(curve: RangeTestCurve, rule: str, smoothing: float, trainer: Trainer, seconds: float) -> LRFinderResult:
    optimizer = trainer.optimizers[0]
    configured = reference_lr(optimizer)
    smoothed = smooth_losses(curve.losses, smoothing)
    suggestions: dict[str, float | None] = {name: suggest_lr(curve.lrs, smoothed, name) for name in RULES}
    ratios: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        ratios[param_group_name(group, index)] = float(group.get("initial_lr", group["lr"])) / configured
    freezing = next((c for c in callbacks_of(trainer) if isinstance(c, LayerFreezing)), None)
    phase = None
    if freezing is not None and freezing.groups and freezing.trainable_groups is not None:
        phase = f"{freezing.trainable_groups}/{len(freezing.groups)}"
    return LRFinderResult(
        lrs=list(curve.lrs),
        losses=list(curve.losses),
        smoothed=smoothed,
        rule=rule,
        suggestion=suggestions[rule],
        suggestions=suggestions,
        configured_lr=configured,
        group_ratios=ratios,
        trainable_groups=phase,
        stopped_early=curve.stopped_early,
        seconds=seconds,
    )


class GroupLRFinder(Callback):
    """Run an LR range test at the start of ``fit`` and train with the suggested LR, layer-wise ratios kept.

    The test trains what the first phase of the module's freezing policy trains, scales every param group's LR by
    one factor, then restores the weights, optimizer, schedulers, loops and RNG states exactly (see
    :mod:`lit_transfer.lr_range_test`). With ``apply=True`` every group's LR, and every LR the schedulers hold, is
    then multiplied by ``suggestion / configured_lr``: the schedule (warmup, cosine, one-cycle) runs as configured
    around the new peak. A resumed ``fit`` (global step > 0) runs no test: its LRs come from the checkpoint.

    Args:
        min_lr: Configured (head) LR of the first step.
        max_lr: Configured (head) LR of the last step.
        num_steps: Optimizer steps of the ramp.
        rule: Suggestion rule, ``"valley"`` (default, see :mod:`lit_transfer.lr_suggest`), ``"steep"`` or
            ``"minimum"``.
        smoothing: Exponential smoothing of the recorded loss.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum (``None``: never).
        apply: Train with the suggestion (``False``: only record it).
        out_dir: Folder for the plot and CSV (default ``<trainer.log_dir>/lr_find``); written by rank 0.

    Attributes:
        result: The :class:`LRFinderResult` of the last test, or ``None``.

    Example:
        >>> GroupLRFinder(num_steps=50)
        GroupLRFinder(min_lr=1e-06, max_lr=1.0, num_steps=50, rule='valley')
    """

    def __init__(
        self,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_steps: int = 100,
        rule: str = DEFAULT_RULE,
        smoothing: float = DEFAULT_SMOOTHING,
        diverge_factor: float | None = 4.0,
        apply: bool = True,
        out_dir: str | Path | None = None,
    ) -> None:
        check_range(min_lr, max_lr, num_steps, diverge_factor)
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}.")
        smooth_losses([], smoothing)  # checks the range
        self.min_lr, self.max_lr, self.num_steps = float(min_lr), float(max_lr), num_steps
        self.rule, self.smoothing, self.diverge_factor = rule, smoothing, diverge_factor
        self.apply = apply
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.result: LRFinderResult | None = None
        self._stop_after_test = False
        self._write_files = True

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_lr={self.min_lr!r}, max_lr={self.max_lr!r}, num_steps={self.num_steps!r},"
            f" rule={self.rule!r})"
        )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0:
            rank_zero_info("GroupLRFinder: a resumed fit keeps its checkpoint's learning rates; no range test.")
            return
        started = time.perf_counter()
        curve = run_range_test(
            trainer,
            pl_module,
            self.min_lr,
            self.max_lr,
            self.num_steps,
            smoothing=self.smoothing,
            diverge_factor=self.diverge_factor,
        )
        self.result = _result(curve, self.rule, self.smoothing, trainer, time.perf_counter() - started)
        if trainer.is_global_zero and self._write_files:
            self.result.save(self.out_dir or Path(trainer.log_dir or trainer.default_root_dir) / "lr_find")
        rank_zero_info(self.result.summary())
        if self._stop_after_test:
            trainer.should_stop = True
            trainer.num_sanity_val_steps = 0
            trainer.fit_loop.min_epochs = None
            trainer.fit_loop.epoch_loop.min_steps = None
        elif self.apply and self.result.suggestion is not None:
            self._apply(trainer, self.result.suggestion)

    @staticmethod
    def _apply(trainer: Trainer, lr: float) -> None:
        optimizer = trainer.optimizers[0]
        factor = lr / reference_lr(optimizer)
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        scale_learning_rates(optimizer, schedulers, factor)
        optimizer.defaults["lr"] = lr


def find_lr(
    model: LightningModule,
    datamodule: LightningDataModule | None = None,
    *,
    train_dataloaders: Any = None,
    trainer: Trainer | None = None,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 100,
    rule: str = DEFAULT_RULE,
    smoothing: float = DEFAULT_SMOOTHING,
    diverge_factor: float | None = 4.0,
    out_dir: str | Path | None = None,
) -> LRFinderResult:
    """Run an LR range test of ``model``'s first freezing phase; leave the model and the RNG as they were.

    Args:
        model: The LightningModule (e.g. a :class:`~lit_transfer.TransferClassifier`); its optimizer, layer decay
            and freezing policy are used as ``fit`` would use them.
        datamodule: The data (or pass ``train_dataloaders``).
        train_dataloaders: Training data when there is no DataModule.
        trainer: The Trainer to run in (its accelerator, precision, strategy); default: a quiet one-device Trainer.
            It is spent afterwards (its ``fit`` is stopped right after the test): build a new one to train.
        min_lr: Configured (head) LR of the first step.
        max_lr: Configured (head) LR of the last step.
        num_steps: Optimizer steps of the ramp.
        rule: Suggestion rule (``"valley"``, ``"steep"``, ``"minimum"``).
        smoothing: Exponential smoothing of the recorded loss.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum (``None``: never).
        out_dir: Where to write the plot and CSV (nothing is written when ``None``; call
            :meth:`LRFinderResult.save` yourself).

    Returns:
        The :class:`LRFinderResult`.

    Example:
        >>> from lit_transfer import TransferClassifier
        >>> from lit_transfer.data import DigitsDataModule
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, layer_decay=0.5)
        >>> data = DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=16, num_workers=0)
        >>> result = find_lr(model, data, num_steps=10, max_lr=0.1)
        >>> len(result.lrs) <= 10 and result.group_ratios["head"] == 1.0
        True
    """
    finder = GroupLRFinder(min_lr, max_lr, num_steps, rule, smoothing, diverge_factor, apply=False, out_dir=out_dir)
    finder._stop_after_test = True
    finder._write_files = out_dir is not None
    if trainer is None:
        trainer = Trainer(
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
    trainer.callbacks = [finder, *callbacks_of(trainer)]  # type: ignore[attr-defined]
    snapshot = _ModelState(model)
    try:
        from lightning.pytorch.utilities.seed import isolate_rng

        with isolate_rng(include_cuda=True):
            trainer.fit(model, datamodule=datamodule, train_dataloaders=train_dataloaders)
    finally:
        snapshot.restore()
    if finder.result is None:
        raise RuntimeError("The LR range test did not run: `fit` ended before it started.")
    return finder.result


class _ModelState:
    """A module's ``requires_grad`` flags and modes, which a stopped ``fit`` leaves in its first phase."""

    def __init__(self, model: LightningModule) -> None:
        self.model = model
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.modes = [m.training for m in model.modules()]

    def restore(self) -> None:
        for param, flag in zip(self.model.parameters(), self.requires_grad):
            param.requires_grad_(flag)
        for module, mode in zip(self.model.modules(), self.modes):
            module.training = mode
