"""``CSVDataModule``: images listed in CSV tables with a class, a set of labels or numbers per image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.data import targets as t
from lit_transfer.data.decode import unique_sorted
from lit_transfer.data.duplicates import drop_repeats, same_file_groups
from lit_transfer.data.file_base import FileImageDataModule, Files, check_dir, check_two_classes
from lit_transfer.data.splits import stratified_split

__all__ = ["CSVDataModule", "TableSplits"]

_COLUMN_HINT = "Set `path_column` and `label_column` (or `label_columns` / `target_columns`) to the right names."


def _cell_key(cell: str, delimiter: str | None) -> object:
    """A target cell in a comparable form: a label set (sorted), a number, or the text."""
    if delimiter:
        return tuple(sorted({part.strip() for part in cell.split(delimiter) if part.strip()}))
    try:
        return float(cell)
    except ValueError:
        return cell


class TableSplits:
    """The files of a DataModule whose splits are CSV tables: the tables' files per split, the predict list or folder.

    Expects ``_tables`` (split -> (paths, targets)), ``_predict_list`` and ``predict_dir`` set by ``__init__``.
    """

    _tables: dict[str, tuple[Any, Any]]
    _predict_list: list[str] | None
    predict_dir: str | None

    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        table = self._tables.get(split)
        return None if table is None else (list(table[0]), list(table[1] or []))

    def _split_hint(self, split: str) -> str:
        return "Pass `predict_csv` or `predict_dir`." if split == "predict" else f"Pass `{split}_csv`."

    def _predict_source(self) -> str | None:
        return self.predict_dir

    def _predict_files(self) -> list[str] | None:
        return list(self._predict_list) if self._predict_list is not None else super()._predict_files()  # type: ignore[misc]


class CSVDataModule(TableSplits, FileImageDataModule):
    """Images listed in CSV files: a path column (relative to the CSV's folder, or absolute) and their targets.

    The targets say the task (:attr:`task`):

    * ``"multiclass"`` (default): one class per row in ``label_column``. A two-class table is also the data of a
      binary classifier (``TransferClassifier(task="binary")``), whose positive class is ``class_names[1]``.
    * ``"multilabel"``: a set of labels per row, either joined by ``label_delimiter`` in ``label_column``
      (``"cat|dog"``) or as one 0/1 column per label (``label_columns``). Batches carry ``float32`` multi-hot
      targets ``(N, L)``.
    * ``"regression"``: numbers in ``target_columns``. Batches carry ``float32`` targets ``(N, K)``, standardised
      with the training rows' mean and standard deviation when ``standardize_targets`` is on (the model undoes it
      when it predicts).

    Targets are read in ``__init__``, so everything the model needs (:attr:`num_classes`, :attr:`class_names`,
    :attr:`label_frequencies`, :attr:`num_outputs`, :attr:`target_names`, :attr:`target_stats`) is known before
    ``setup()`` and the CLI links it into the model. Without ``val_csv``, ``val_fraction`` of the training rows is
    held out: stratified by class for multiclass, a seeded random draw otherwise. Label frequencies and target
    statistics are those of the rows that train (the held-out rows left out). A row that repeats another's image
    (the same file, a link or a byte-identical copy) with the same targets is left out with a warning; with other
    targets it is an error naming both rows (:mod:`lit_transfer.data.duplicates`).

    Args:
        train_csv: Training table.
        val_csv: Optional validation table.
        test_csv: Optional test table.
        predict_csv: Optional table of unlabelled images (only ``path_column`` is read).
        predict_dir: Alternatively, a folder of unlabelled images.
        path_column: Column with image paths.
        label_column: Column with the class, or (with ``label_delimiter``) the labels, of each image.
        label_delimiter: Multi-label: the string between labels in ``label_column`` (e.g. ``"|"``, ``" "``).
        label_columns: Multi-label: one column per label holding 0 or 1; the label names are the column names, in
            this order.
        target_columns: Regression: the columns holding the numbers to predict.
        standardize_targets: Regression: train on ``(value - mean) / std`` per target column (the statistics of
            the training rows, in :attr:`target_stats`).
        allow_empty_labels: Multi-label: accept rows that hold none of the labels.
        **kwargs: The arguments of :class:`~lit_transfer.data.file_base.FileImageDataModule` (``val_fraction``,
            ``on_bad_image``, ``scan``) and of :class:`~lit_transfer.data.base.BaseImageDataModule`
            (``batch_size``, ``num_workers``, ``seed``, ``train_transform``, ``data_config``, ``image_size``,
            ``in_chans``, ...).

    Attributes:
        task: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        class_names: The classes or labels (empty for regression).
        label_frequencies: Multi-label: the fraction of training rows holding each label; else ``None``.
        num_outputs: Regression: the number of target columns; else ``None``.
        target_names: Regression: the target columns; else ``None``.
        target_stats: Regression with ``standardize_targets``: ``{"mean": [...], "std": [...]}`` per target
            column; else ``None``.

    Raises:
        FileNotFoundError: A CSV, or a file it lists, does not exist (all missing files are listed).
        ValueError: A column is missing, a table is empty, options contradict each other, or a cell is wrong: a
            val/test label unseen in training, an empty label set (unless allowed), a 0/1 cell holding something
            else, a target that is not a finite number. The message names the CSV, the row and the column.

    Example:
        >>> import csv, tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [("a.png", "cat|dog"), ("b.png", "dog"), ("c.png", "cat"), ("d.png", "bird|cat")]
        >>> for name, _ in rows:
        ...     Image.new("RGB", (8, 8)).save(root / name)
        >>> with open(root / "train.csv", "w", newline="") as f:
        ...     csv.writer(f).writerows([("path", "tags"), *rows])
        >>> dm = CSVDataModule(root / "train.csv", label_column="tags", label_delimiter="|", val_fraction=0)
        >>> dm.task, dm.class_names, dm.label_frequencies
        ('multilabel', ['bird', 'cat', 'dog'], [0.25, 0.75, 0.5])
    """

    def __init__(
        self,
        train_csv: str | os.PathLike,
        val_csv: str | os.PathLike | None = None,
        test_csv: str | os.PathLike | None = None,
        predict_csv: str | os.PathLike | None = None,
        predict_dir: str | os.PathLike | None = None,
        path_column: str = "path",
        label_column: str = "label",
        label_delimiter: str | None = None,
        label_columns: list[str] | None = None,
        target_columns: list[str] | None = None,
        standardize_targets: bool = True,
        allow_empty_labels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if predict_csv is not None and predict_dir is not None:
            raise ValueError("Pass either `predict_csv` or `predict_dir`, not both.")
        self.task: t.Task = t.check_task_options(label_delimiter, label_columns, target_columns)
        if self.balanced_sampling and self.task != "multiclass":
            raise ValueError(
                f"`balanced_sampling=True` draws class-balanced batches, which needs one class per image; this table"
                f" is {self.task}. Leave `balanced_sampling` off."
            )
        self.path_column, self.label_column = path_column, label_column
        self.label_delimiter = label_delimiter
        self.label_columns = list(label_columns) if label_columns is not None else None
        self.target_columns = list(target_columns) if target_columns is not None else None
        self.standardize_targets = bool(standardize_targets)
        self.allow_empty_labels = bool(allow_empty_labels)
        self.label_frequencies: list[float] | None = None
        self.num_outputs: int | None = None
        self.target_names: list[str] | None = None
        self.target_stats: dict[str, list[float]] | None = None

        tables: dict[str, t.Table] = {}
        for split, csv_path in (("train", train_csv), ("val", val_csv), ("test", test_csv)):
            if csv_path is not None:
                columns = (path_column, *self._target_columns())
                tables[split] = t.read_table(csv_path, f"{split}_csv", columns, _COLUMN_HINT)
        paths = {split: t.resolve_paths(table, path_column) for split, table in tables.items()}
        for split in list(tables):  # each image once, before targets, statistics and the hold-out are computed
            tables[split], paths[split] = self._unique_rows(tables[split], paths[split])
        values = self._read_targets(tables)
        self._tables: dict[str, Files] = {split: (paths[split], list(values[split])) for split in tables}
        self.predict_dir = None if predict_dir is None else check_dir(predict_dir, "predict_dir", "")
        self._predict_list: list[str] | None = None
        if predict_csv is not None:
            predict = t.read_table(predict_csv, "predict_csv", (path_column,), "Set `path_column` to the right name.")
            self._predict_list = t.resolve_paths(predict, path_column)

    def _unique_rows(self, table: t.Table, paths: list[str]) -> tuple[t.Table, list[str]]:
        """``table`` without the rows that repeat an earlier row's image and targets (an error if targets differ)."""
        groups = same_file_groups(paths)
        if not groups:
            return table, paths
        columns = self._target_columns()
        keys = [tuple(_cell_key(row[c], self.label_delimiter) for c in columns) for row in table.rows]
        targets = [key[0] if len(key) == 1 else key for key in keys]

        def describe(i: int) -> str:
            return f"row {i + 1} (line {table.lines[i]}, {table.rows[i][self.path_column]!r})"

        dropped = drop_repeats(groups, targets, describe, f"`{table.argument}` {table.path!r}")
        keep = [i for i in range(len(paths)) if i not in dropped]
        rows, lines = [table.rows[i] for i in keep], [table.lines[i] for i in keep]
        return t.Table(table.argument, table.path, rows, lines), [paths[i] for i in keep]

    def _unique(self, split: str, files: Files | None) -> Files | None:
        return files  # the tables' repeats were left out in __init__, before the targets were read

    # ------------------------------------------------------------------------------------ reading targets
    def _target_columns(self) -> tuple[str, ...]:
        if self.task == "regression":
            return tuple(self.target_columns or ())
        return tuple(self.label_columns) if self.label_columns is not None else (self.label_column,)

    def _read_targets(self, tables: dict[str, t.Table]) -> dict[str, np.ndarray]:
        """Each split's targets; fills the class names, label frequencies, target names and statistics."""
        if self.task == "multiclass":
            return self._read_classes(tables)
        if self.task == "regression":
            return self._read_numbers(tables)
        return self._read_label_sets(tables)

    def _read_classes(self, tables: dict[str, t.Table]) -> dict[str, np.ndarray]:
        column = self.label_column
        self.class_names = unique_sorted([row[column] for row in tables["train"].rows])
        check_two_classes(
            self.class_names,
            f"`train_csv` {tables['train'].path!r} (column {column!r})",
            "Label the rows with at least two distinct classes.",
        )
        index = {name: i for i, name in enumerate(self.class_names)}
        out = {}
        for split, table in tables.items():
            labels = [row[column] for row in table.rows]
            unknown = sorted(set(labels) - set(index))
            if unknown:
                first = labels.index(unknown[0])
                raise ValueError(
                    f"`{split}_csv` has labels {unknown[:10]} that do not occur in `train_csv`; known:"
                    f" {self.class_names}. The first: {table.at(first, column)}."
                )
            out[split] = np.asarray([index[label] for label in labels], dtype=np.int64)
        return out

    def _read_label_sets(self, tables: dict[str, t.Table]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.label_columns is not None:
            self.class_names = list(self.label_columns)
            out = {s: t.label_flags(table, self.label_columns, self.allow_empty_labels) for s, table in tables.items()}
            never = [name for name, count in zip(self.class_names, out["train"].sum(axis=0).tolist()) if count == 0]
            if never:
                raise ValueError(
                    f"`train_csv` {tables['train'].path!r}: the label column(s) {never} hold 0 in every row; a label"
                    " the training data never shows cannot be learnt. Leave them out of `label_columns`."
                )
        else:
            delimiter = str(self.label_delimiter)
            sets = {
                s: t.label_sets(table, self.label_column, delimiter, self.allow_empty_labels)
                for s, table in tables.items()
            }
            self.class_names = t.distinct_labels(sets["train"])
            if not self.class_names:
                raise ValueError(
                    f"`train_csv` {tables['train'].path!r} (column {self.label_column!r}) has no label in any row."
                )
            out = {s: t.multi_hot(tables[s], self.label_column, sets[s], self.class_names) for s in tables}
        kept = self._training_rows(out["train"], has_val="val" in tables)
        self.label_frequencies = t.label_fractions(out["train"][kept])
        absent = [name for name, f in zip(self.class_names, self.label_frequencies) if f == 0]
        if absent:
            rank_zero_warn(
                f"CSVDataModule: the label(s) {absent} occur only in the rows held out for validation; no training"
                " row holds them. Add training rows with them, or pass a `val_csv`."
            )
        return out

    def _read_numbers(self, tables: dict[str, t.Table]) -> dict[str, np.ndarray]:
        names = list(self.target_columns or ())
        values = {s: t.numeric_targets(table, names) for s, table in tables.items()}
        self.target_names, self.num_outputs = names, len(names)
        if self.standardize_targets:
            kept = self._training_rows(values["train"], has_val="val" in tables)
            where = f"`train_csv` {tables['train'].path!r}"
            self.target_stats = t.target_stats(values["train"][kept], names, where)
        return {s: t.standardize(v, self.target_stats) for s, v in values.items()}

    def _training_rows(self, targets: np.ndarray, has_val: bool) -> list[int]:
        """The rows of ``train_csv`` that train: all of them, or those the validation hold-out leaves."""
        if has_val or self.val_fraction == 0:
            return list(range(len(targets)))
        return self._hold_out(list(targets))[0]

    # ------------------------------------------------------------------------------------ splits
    def _hold_out(self, labels: Sequence[Any]) -> tuple[list[int], list[int]]:
        """Stratified by class for multiclass, a seeded random draw for label sets and numbers."""
        if self.task == "multiclass":
            return stratified_split([int(v) for v in labels], self.val_fraction, self.seed)
        return t.random_split(len(labels), self.val_fraction, self.seed)

    def _targets_summary(self) -> str:
        if self.task == "regression":
            return f"{self.num_outputs} regression target(s) {self.target_names}"
        if self.task == "multilabel":
            return f"{self.num_classes} labels"
        return f"{self.num_classes} classes"
