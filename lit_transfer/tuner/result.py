"""What an LR range test found: the curve, each rule's suggestion, the plot and the CSV."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch import Trainer

from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.trainer_facts import find_callback, param_group_name
from lit_transfer.tuner.range_test import RangeTestCurve, reference_lr
from lit_transfer.tuner.suggest import RULES, smooth_losses, suggest_lr

__all__ = ["LRFinderResult", "finder_result"]

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
        cached_features: Whether the head's steps ran on features the frozen backbone computed once.
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
    cached_features: bool = False
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
            on = " (head steps on cached backbone features)" if self.cached_features else ""
            lines.append(f"  first phase trains {self.trainable_groups} layer groups{on}")
        named = {name: lr for name, lr in self.group_lrs().items() if not name.endswith(".no_decay")}
        groups = ", ".join(f"{name} {lr:.2g}" for name, lr in named.items())
        if groups:
            lines.append(f"  group LRs at the suggestion: {groups}")
        return "\n".join(lines)


def finder_result(
    curve: RangeTestCurve, rule: str, smoothing: float, trainer: Trainer, seconds: float
) -> LRFinderResult:
    """The :class:`LRFinderResult` of a finished range test: every rule's suggestion, the group ratios, the phase."""
    optimizer = trainer.optimizers[0]
    configured = reference_lr(optimizer)
    smoothed = smooth_losses(curve.losses, smoothing)
    suggestions: dict[str, float | None] = {name: suggest_lr(curve.lrs, smoothed, name) for name in RULES}
    ratios: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        ratios[param_group_name(group, index)] = float(group.get("initial_lr", group["lr"])) / configured
    freezing = find_callback(trainer, LayerFreezing)
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
        cached_features=curve.cached_features,
        seconds=seconds,
    )
