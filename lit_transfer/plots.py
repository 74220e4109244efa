"""Plots of a training run, as pure functions from recorded values to a saved PNG.

Each function takes plain Python data (lists of dicts, nested lists), draws one figure with matplotlib's
non-interactive Agg renderer (a bare ``Figure``: pyplot's global state and backend are left alone), saves it and
returns the path. Nothing here needs a Trainer: :class:`~lit_transfer.callbacks.RunReport` records the values during
a run and calls these functions at the end of ``fit`` and ``test``, and you can call them yourself on a
``epochs.csv``/``steps.csv`` read back with ``csv.DictReader``.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> epochs = [{"epoch": 0, "train_loss": 1.2, "val_loss": 1.0}, {"epoch": 1, "train_loss": 0.7, "val_loss": 0.8}]
    >>> plot_learning_curves(epochs, out / "curves.png").name
    'curves.png'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["metric_names", "plot_confusion_matrix", "plot_learning_curves", "plot_schedule"]

_SPLITS = ("train", "val", "test")
_SPLIT_STYLE = {"train": "-", "val": "--", "test": ":"}


def _figure(
    rows: int, cols: int = 1, width: float = 6.4, row_height: float = 2.4, sharex: bool = False
) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot and its global state stay untouched

    fig = Figure(figsize=(width, row_height * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex)
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_names(epochs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Metric base names present for at least one split (``loss``, ``acc``, ``f1``), loss first.

    Example:
        >>> metric_names([{"epoch": 0, "train_loss": 1.0, "val_map": 0.5, "val_loss_epoch": 0.9}])
        ['loss', 'map']
    """
    names: dict[str, None] = {}
    for row in epochs:
        for key in row:
            split, _, base = key.partition("_")
            if split in _SPLITS and base and not base.endswith("_step"):
                names.setdefault(base.removesuffix("_epoch"), None)
    ordered = sorted(names, key=lambda n: (n != "loss", n != "acc", n))
    return ordered


def plot_learning_curves(
    epochs: Sequence[Mapping[str, Any]], path: str | Path, metrics: Sequence[str] | None = None
) -> Path:
    """Per-epoch loss and metrics, one panel per metric, one line per split (train, val, test).

    Args:
        epochs: One mapping per epoch with an ``epoch`` key and values named ``<split>_<metric>``
            (``train_loss``, ``val_acc``; an ``_epoch`` suffix as Lightning logs it is accepted). Missing or
            non-finite values are skipped.
        path: PNG file to write (parent folders are created).
        metrics: Metric base names to draw (default: ``loss`` and ``acc`` when present, else every one found);
            :class:`~lit_transfer.callbacks.RunReport` passes the loss and the metric its task's ``best.ckpt`` is
            chosen by (``map`` for multi-label, ``mae`` and each target's ``mae_<target>`` for regression).

    Returns:
        ``path``.

    Raises:
        ValueError: If ``epochs`` holds no ``<split>_<metric>`` values.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"epoch": e, "train_loss": 1 / (e + 1), "val_acc": 0.5 + 0.1 * e} for e in range(3)]
        >>> plot_learning_curves(rows, pathlib.Path(tempfile.mkdtemp()) / "c.png").suffix
        '.png'
    """
    found = metric_names(epochs)
    if metrics is None:
        metrics = [n for n in found if n in ("loss", "acc")] or found
    names = list(metrics)
    if not names:
        raise ValueError(
            "`epochs` holds no `<split>_<metric>` values (e.g. `train_loss`, `val_acc`) to plot;"
            f" keys found: {sorted({k for row in epochs for k in row})}."
        )
    fig, axes = _figure(len(names), sharex=True)
    for ax, name in zip(axes[:, 0], names):
        for split in _SPLITS:
            xs, ys = [], []
            for index, row in enumerate(epochs):
                value = row.get(f"{split}_{name}", row.get(f"{split}_{name}_epoch"))
                number = _finite(value)
                if number is not None:
                    xs.append(int(row.get("epoch", index)))
                    ys.append(number)
            if ys:
                ax.plot(xs, ys, _SPLIT_STYLE[split], marker="o", markersize=3, label=split)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Learning curves")
    return _save(fig, path)


def plot_schedule(steps: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """What the training loop did over optimizer steps: LR per param group, batch size, trainable parameters.

    Args:
        steps: One mapping per recorded step with keys ``step``; ``lr/<group name>`` (one per param group);
            optional ``batch_size`` (global batch), ``trainable_params``, ``trainable_groups`` and ``optimizer``
            (class name; a change is marked by a vertical line and labelled).
        path: PNG file to write.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``steps`` is empty.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"step": s, "lr/head": 0.1, "lr/stem": 0.01 * s, "batch_size": 8, "optimizer": "SGD"}
        ...         for s in range(4)]
        >>> plot_schedule(rows, pathlib.Path(tempfile.mkdtemp()) / "s.png").name
        's.png'
    """
    if not steps:
        raise ValueError("`steps` is empty: nothing was recorded to plot (did the run train at least one step?).")
    x = [int(row.get("step", i)) for i, row in enumerate(steps)]
    lr_keys = list(dict.fromkeys(k for row in steps for k in row if k.startswith("lr/")))
    panels = ["lr"]
    if any("batch_size" in row for row in steps):
        panels.append("batch_size")
    if any("trainable_params" in row for row in steps):
        panels.append("trainable")
    fig, axes = _figure(len(panels), sharex=True)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "lr":
            for key in lr_keys:
                points = [(s, _finite(row.get(key))) for s, row in zip(x, steps)]
                ax.plot([s for s, v in points if v is not None], [v for _, v in points if v is not None], label=key[3:])
            ax.set_ylabel("learning rate")
            if len(lr_keys) <= 12:
                ax.legend(loc="best", fontsize="x-small", ncol=2 if len(lr_keys) > 4 else 1)
        elif panel == "batch_size":
            ax.step(x, [_finite(row.get("batch_size")) for row in steps], where="post")
            ax.set_ylabel("global batch")
        else:
            ax.step(x, [_finite(row.get("trainable_params")) for row in steps], where="post", label="parameters")
            ax.set_ylabel("trainable params")
            groups = [_finite(row.get("trainable_groups")) for row in steps]
            if any(g is not None for g in groups):
                twin = ax.twinx()
                twin.step(x, groups, where="post", color="tab:orange", linestyle="--", label="groups")
                twin.set_ylabel("trainable groups")
                twin.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    _mark_optimizer_changes(axes[:, 0], x, steps)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.suptitle("Schedule")
    return _save(fig, path)


def _mark_optimizer_changes(axes: Sequence[Any], x: list[int], steps: Sequence[Mapping[str, Any]]) -> None:
    previous = None
    for s, row in zip(x, steps):
        name = row.get("optimizer")
        if name is None:
            continue
        if previous is None:
            axes[0].annotate(
                str(name), (0.01, 0.95), xycoords="axes fraction", va="top", fontsize="small", color="tab:gray"
            )
        elif name != previous:
            for ax in axes:
                ax.axvline(s, color="tab:red", linestyle=":", linewidth=1)
            axes[0].annotate(
                f"→ {name}", (s, 0.95), xycoords=("data", "axes fraction"), va="top", fontsize="small", color="tab:red"
            )
        previous = name


def plot_confusion_matrix(
    matrix: Sequence[Sequence[float]],
    class_names: Sequence[str] | None,
    path: str | Path,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """A confusion matrix with class names: rows are true classes, columns predicted ones.

    Cells show the row-normalised fraction (recall per class on the diagonal) when ``normalize`` is on, with the
    raw counts in small print while the matrix is small enough to read (up to 20 classes).

    Args:
        matrix: Square ``[true][predicted]`` counts (a list of lists, a NumPy array or a tensor).
        class_names: One name per class (default: ``0``, ``1``, ...).
        path: PNG file to write.
        normalize: Colour and print the fraction of each true class rather than counts.
        title: Figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``matrix`` is not square or ``class_names`` has another length.

    Example:
        >>> import tempfile, pathlib
        >>> plot_confusion_matrix([[5, 1], [2, 4]], ["cat", "dog"], pathlib.Path(tempfile.mkdtemp()) / "cm.png").name
        'cm.png'
    """
    import numpy as np

    counts = np.asarray(matrix.tolist() if hasattr(matrix, "tolist") else matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"`matrix` must be a non-empty square [true][predicted] matrix, got shape {counts.shape}.")
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"`class_names` has {len(names)} names but the matrix has {n} classes.")
    totals = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) if normalize else counts
    size = min(12.0, max(4.4, 0.45 * n + 2.6))
    fig, axes = _figure(1, width=size, row_height=size * 0.9)
    ax = axes[0, 0]
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    rotate = n > 8 or max(len(name) for name in names) > 4
    ax.set_xticks(range(n), labels=names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        threshold = (shown.max() or 1) / 2
        for i in range(n):
            for j in range(n):
                text = f"{shown[i, j]:.2f}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
                colour = "white" if shown[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color=colour)
    accuracy = np.trace(counts) / counts.sum() if counts.sum() else float("nan")
    ax.set_title(f"{title} (accuracy {accuracy:.3f}, n={int(counts.sum())})", fontsize="medium")
    return _save(fig, path)
