"""``CSVDataModule``: labelled images listed in CSV tables (a path column and a label column)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal

from lit_transfer.data.decode import unique_sorted
from lit_transfer.data.file_base import FileImageDataModule, Files, check_classes, check_dir

__all__ = ["CSVDataModule"]


def _read_csv(path: str | os.PathLike, argument: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{argument}` file {path!r} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"`{argument}` {path!r} lacks column(s) {missing}; its columns are {header}. Set `path_column` / "
                "`label_column` to the right names."
            )
        rows = [{c: (row.get(c) or "").strip() for c in columns} for row in reader]
    if not rows:
        raise ValueError(f"`{argument}` {path!r} has no rows.")
    return rows


def _resolve_paths(rows: list[dict[str, str]], column: str, csv_path: str | os.PathLike, argument: str) -> list[str]:
    base = Path(csv_path).resolve().parent
    paths = [str(base / row[column]) for row in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:20]) + (
            f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise FileNotFoundError(
            f"`{argument}` {os.fspath(csv_path)!r} lists {len(missing)} file(s) that do not exist (paths are relative "
            f"to the CSV's folder):\n{shown}"
        )
    return paths


class CSVDataModule(FileImageDataModule):
    """Images listed in CSV files: a path column (relative to the CSV's folder, or absolute) and a label column.

    Labels are read in ``__init__``: class names are the distinct training labels as strings (sorted
    numerically when all are integers), so ``num_classes`` is known before ``setup()``. Without ``val_csv``,
    a stratified ``val_fraction`` of the training rows is held out.

    Args:
        train_csv: Training table.
        val_csv: Optional validation table.
        test_csv: Optional test table.
        predict_csv: Optional table of unlabelled images (only ``path_column`` is read).
        predict_dir: Alternatively, a folder of unlabelled images.
        path_column: Column with image paths.
        label_column: Column with class labels.
        **kwargs: The arguments of :class:`~lit_transfer.data.file_base.FileImageDataModule` (``val_fraction``,
            ``on_bad_image``, ``scan``) and of :class:`~lit_transfer.data.base.BaseImageDataModule`
            (``batch_size``, ``num_workers``, ``seed``, ``train_transform``, ``data_config``, ``image_size``,
            ``in_chans``, ...).

    Raises:
        FileNotFoundError: A CSV, or a file it lists, does not exist (all missing files are listed).
        ValueError: A column is missing, a table is empty, there are fewer than two classes, or a val/test label
            does not occur in training.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if predict_csv is not None and predict_dir is not None:
            raise ValueError("Pass either `predict_csv` or `predict_dir`, not both.")
        self.path_column, self.label_column = path_column, label_column
        self._tables: dict[str, Files] = {}
        raw: dict[str, tuple[list[str], list[str]]] = {}
        for split, csv_path in (("train", train_csv), ("val", val_csv), ("test", test_csv)):
            if csv_path is None:
                continue
            rows = _read_csv(csv_path, f"{split}_csv", (path_column, label_column))
            raw[split] = (_resolve_paths(rows, path_column, csv_path, f"{split}_csv"), [r[label_column] for r in rows])
        self.class_names = unique_sorted(raw["train"][1])
        check_classes(
            self.class_names,
            f"`train_csv` {os.fspath(train_csv)!r} (column {label_column!r})",
            "Label the rows with at least two distinct classes.",
        )
        index = {name: i for i, name in enumerate(self.class_names)}
        for split, (paths, labels) in raw.items():
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise ValueError(
                    f"`{split}_csv` has labels {unknown[:10]} that do not occur in `train_csv`; "
                    f"known: {self.class_names}."
                )
            self._tables[split] = (paths, [index[label] for label in labels])
        self.predict_dir = None if predict_dir is None else check_dir(predict_dir, "predict_dir", "")
        self._predict_list: list[str] | None = None
        if predict_csv is not None:
            rows = _read_csv(predict_csv, "predict_csv", (path_column,))
            self._predict_list = _resolve_paths(rows, path_column, predict_csv, "predict_csv")

    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        table = self._tables.get(split)
        return None if table is None else (list(table[0]), list(table[1] or []))

    def _split_hint(self, split: str) -> str:
        return "Pass `predict_csv` or `predict_dir`." if split == "predict" else f"Pass `{split}_csv`."

    def _predict_source(self) -> str | None:
        return self.predict_dir

    def _predict_files(self) -> list[str] | None:
        return list(self._predict_list) if self._predict_list is not None else super()._predict_files()
