"""The targets of a CSV table: a class per row, a set of labels per row (multi-label), or numbers (regression).

Every reader checks every row and raises a ``ValueError`` that names the table (its argument and file), the row
(counted from 1 after the header; the file line in brackets) and the column, with the value at fault and the fix.

* multiclass: one ``label_column``; its distinct training values are the classes.
* multi-label, from one column: ``label_delimiter`` splits a cell into labels (``"cat|dog"``; fastai's
  ``label_delim``); the distinct training labels, sorted as class names are, are the label names.
* multi-label, from 0/1 columns: ``label_columns`` are the labels, in the order given; a cell is ``0`` or ``1``.
* regression: ``target_columns`` hold numbers (finite floats).

Targets are NumPy arrays: class indices ``(N,)`` for multiclass, ``float32`` multi-hot ``(N, L)`` for multi-label and
``float32`` values ``(N, K)`` for regression.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lit_transfer.data.decode import unique_sorted

__all__ = [
    "Table",
    "Task",
    "check_task_options",
    "distinct_labels",
    "label_flags",
    "label_fractions",
    "label_sets",
    "multi_hot",
    "numeric_targets",
    "random_split",
    "read_table",
    "resolve_paths",
    "standardize",
    "target_stats",
]

Task = Literal["multiclass", "multilabel", "regression"]
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclass(frozen=True)
class Table:
    """The rows of one CSV file: each row's cells (stripped) and the file line it starts on.

    Attributes:
        argument: The DataModule argument that named the file (``"train_csv"`` ...).
        path: The file.
        rows: One ``{column: cell}`` dict per data row, holding only the columns that were asked for.
        lines: The file line of each row (the header is line 1).
    """

    argument: str
    path: str
    rows: list[dict[str, str]]
    lines: list[int]

    def at(self, index: int, column: str) -> str:
        """Where row ``index`` (0-based) of ``column`` is, for a message: table, file, row (line) and column.

        Example:
            >>> Table("val_csv", "val.csv", [{"tags": "x"}], [2]).at(0, "tags")
            "`val_csv` 'val.csv', row 1 (line 2), column 'tags'"
        """
        return f"`{self.argument}` {self.path!r}, row {index + 1} (line {self.lines[index]}), column {column!r}"


def _utf8_text(path: str, argument: str) -> str:
    """The file's text (UTF-8, an optional BOM); another encoding is an error naming the file, line and bytes."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        shown = raw[err.start : err.start + 4].hex(" ")
        raise ValueError(
            f"`{argument}` {path!r} is not UTF-8 text: line {line} holds the byte(s) {shown}, which UTF-8 does not"
            " allow (the file was probably saved as Latin-1 or Windows-1252). Save it as UTF-8, e.g. `iconv -f cp1252"
            " -t utf-8 old.csv > new.csv`, or 'CSV UTF-8' in a spreadsheet's Save As."
        ) from None


def resolve_paths(table: Table, column: str, kind: str = "") -> list[str]:
    """The paths of a table's ``column``, relative to the table's folder; every missing file listed in one error.

    Args:
        table: The table.
        column: The column of paths.
        kind: What the files are (``"mask"``), named with the column in the message when given.

    Raises:
        FileNotFoundError: Naming the table's argument and file, the count and the first 20 missing paths.
    """
    base = Path(table.path).resolve().parent
    paths = [str(base / row[column]) for row in table.rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:20]) + (
            f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        what = f"{kind} file(s) (column {column!r})" if kind else "file(s)"
        raise FileNotFoundError(
            f"`{table.argument}` {table.path!r} lists {len(missing)} {what} that do not exist (paths are relative to"
            f" the CSV's folder):\n{shown}"
        )
    return paths


def read_table(path: str | os.PathLike, argument: str, columns: Sequence[str], hint: str) -> Table:
    """Read the ``columns`` of a CSV file (UTF-8, an optional BOM), keeping each row's line number.

    A file in another encoding is refused with the line of the first byte UTF-8 does not allow.

    Args:
        path: The CSV file.
        argument: The argument that named it, for messages.
        columns: The columns to read; each must be in the header.
        hint: The options that name the columns, for the message about a missing one.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A column is missing, the table has no rows, or it is not UTF-8 (the line is named).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{argument}` file {path!r} does not exist.")
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    reader = csv.DictReader(io.StringIO(_utf8_text(path, argument), newline=""))
    try:
        header = list(reader.fieldnames or [])
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"`{argument}` {path!r} lacks column(s) {missing}; its columns are {header}. {hint}")
        start = 2  # the header is line 1; a row starts on the line after the previous row ended
        for row in reader:
            rows.append({c: (row.get(c) or "").strip() for c in columns})
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"`{argument}` {path!r}, line {reader.line_num}: not a readable CSV line ({err}).") from None
    if not rows:
        raise ValueError(f"`{argument}` {path!r} has no rows.")
    return Table(argument, path, rows, lines)


def check_task_options(
    label_delimiter: str | None, label_columns: Sequence[str] | None, target_columns: Sequence[str] | None
) -> Task:
    """The task the options ask for; at most one of them may be given.

    Example:
        >>> [check_task_options(*options) for options in ((None, None, None), ("|", None, None), (None, None, ["y"]))]
        ['multiclass', 'multilabel', 'regression']
    """
    given = [
        name
        for name, value in (
            ("label_delimiter", label_delimiter),
            ("label_columns", label_columns),
            ("target_columns", target_columns),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"Pass only one of `label_delimiter` (several labels in `label_column`), `label_columns` (one 0/1 column"
            f" per label) and `target_columns` (numbers to regress); got {' and '.join(f'`{g}`' for g in given)}."
        )
    if label_delimiter is not None and (not isinstance(label_delimiter, str) or not label_delimiter):
        raise ValueError(f"`label_delimiter` must be a non-empty string such as '|' or ' ', got {label_delimiter!r}.")
    for name, columns in (("label_columns", label_columns), ("target_columns", target_columns)):
        if columns is None:
            continue
        if isinstance(columns, str) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError(f"`{name}` must be a non-empty list of column names, got {columns!r}.")
        repeated = sorted({c for c in columns if list(columns).count(c) > 1})
        if repeated:
            raise ValueError(f"`{name}` names the column(s) {repeated} more than once.")
    if target_columns is not None:
        return "regression"
    return "multilabel" if given else "multiclass"


def label_sets(table: Table, column: str, delimiter: str, allow_empty: bool) -> list[list[str]]:
    """The labels of every row: ``column`` split at ``delimiter``, blanks dropped, repeats kept once.

    Raises:
        ValueError: A row has no label and ``allow_empty`` is off.
    """
    sets: list[list[str]] = []
    for i, row in enumerate(table.rows):
        labels = list(dict.fromkeys(p.strip() for p in row[column].split(delimiter) if p.strip()))
        if not labels and not allow_empty:
            raise ValueError(
                f"{table.at(i, column)}: the row has no label. Label it (labels joined by {delimiter!r}), or pass"
                " `allow_empty_labels=True` if an image may hold none of the labels."
            )
        sets.append(labels)
    return sets


def multi_hot(table: Table, column: str, sets: list[list[str]], names: Sequence[str]) -> np.ndarray:
    """``float32`` ``(N, L)`` multi-hot rows of ``sets`` over ``names``.

    Raises:
        ValueError: A label is not among ``names`` (a validation or test label that training never had).
    """
    index = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(sets), len(names)), dtype=np.float32)
    for i, labels in enumerate(sets):
        for label in labels:
            if label not in index:
                raise ValueError(
                    f"{table.at(i, column)}: label {label!r} does not occur in `train_csv`; the model only knows"
                    f" the training labels {list(names)}. Fix the label, or add training rows with it."
                )
            out[i, index[label]] = 1.0
    return out


def label_flags(table: Table, columns: Sequence[str], allow_empty: bool) -> np.ndarray:
    """``float32`` ``(N, L)`` multi-hot rows from one 0/1 column per label (``true``/``false``, ``yes``/``no`` too).

    Raises:
        ValueError: A cell is not 0/1, or a row has no label and ``allow_empty`` is off.
    """
    out = np.zeros((len(table.rows), len(columns)), dtype=np.float32)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(columns):
            cell = row[column].lower()
            if cell in _TRUE:
                out[i, j] = 1.0
            elif cell not in _FALSE:
                raise ValueError(
                    f"{table.at(i, column)}: {row[column]!r} is not 0 or 1. Each of `label_columns` says whether"
                    " the image holds that label: write 1 (it does) or 0 (it does not)."
                )
        if not allow_empty and not out[i].any():
            raise ValueError(
                f"{table.at(i, columns[0])}: the row has 0 in every one of `label_columns` {list(columns)}. Label it,"
                " or pass `allow_empty_labels=True` if an image may hold none of the labels."
            )
    return out


def numeric_targets(table: Table, columns: Sequence[str]) -> np.ndarray:
    """``float64`` ``(N, K)`` values of the ``columns``.

    Raises:
        ValueError: A cell is empty, not a number, NaN or infinite.
    """
    out = np.zeros((len(table.rows), len(columns)), dtype=np.float64)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(columns):
            cell = row[column]
            try:
                value = float(cell)
            except ValueError:
                what = "is empty" if not cell else f"{cell!r} is not a number"
                raise ValueError(
                    f"{table.at(i, column)}: {what}. `target_columns` hold the values to regress: write a number"
                    " (e.g. 3 or 0.25), or leave the row out."
                ) from None
            if not math.isfinite(value):
                raise ValueError(
                    f"{table.at(i, column)}: {cell!r} is not a finite number. A missing value cannot be a regression"
                    " target: leave the row out, or fill in the value."
                )
            out[i, j] = value
    return out


def random_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out ``round(count * fraction)`` rows drawn with ``seed`` (at least one, leaving one, when possible).

    The split for multi-label and regression targets, where classes to stratify by do not exist.

    Example:
        >>> kept, held = random_split(10, 0.2, seed=0)
        >>> len(kept), len(held), sorted(kept + held) == list(range(10))
        (8, 2, True)
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"`val_fraction` must be in [0, 1), got {fraction!r}.")
    order = np.random.default_rng(seed).permutation(count)
    held = round(count * fraction)
    if fraction > 0 and count >= 2:
        held = min(max(held, 1), count - 1)
    elif count < 2:
        held = 0
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def label_fractions(targets: np.ndarray) -> list[float]:
    """The fraction of rows holding each label of multi-hot ``targets``.

    Example:
        >>> label_fractions(np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.float32))
        [0.75, 0.25]
    """
    return [float(v) for v in np.asarray(targets, dtype=np.float64).mean(axis=0)] if len(targets) else []


def target_stats(values: np.ndarray, names: Sequence[str], where: str) -> dict[str, list[float]]:
    """Per-column mean and standard deviation (population) of ``values``.

    Raises:
        ValueError: A column has the same value in every row (nothing to learn, and no scale to standardise by).

    Example:
        >>> target_stats(np.array([[1.0], [3.0]]), ["y"], "train")
        {'mean': [2.0], 'std': [1.0]}
    """
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    constant = [name for name, s in zip(names, std) if not s > 0]
    if constant:
        raise ValueError(
            f"{where}: the target column(s) {constant} hold the same value in every training row; there is nothing to"
            " learn from them. Leave them out of `target_columns`."
        )
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def standardize(values: np.ndarray, stats: dict[str, list[float]] | None) -> np.ndarray:
    """``(values - mean) / std`` as ``float32`` (``values`` unchanged, as ``float32``, without ``stats``)."""
    if stats is None:
        return np.asarray(values, dtype=np.float32)
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    return ((np.asarray(values, dtype=np.float64) - mean) / std).astype(np.float32)


def distinct_labels(sets: list[list[str]]) -> list[str]:
    """The distinct labels of ``sets``, sorted as class names are (numerically when all are integers)."""
    return unique_sorted([label for labels in sets for label in labels])
