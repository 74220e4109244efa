"""DataModule arguments: declared once in the base, complete in every signature and on the command line; renamed
modules and functions still importable; ``augments_training``."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser
from PIL import Image

from lit_transfer.data import (
    BaseImageDataModule,
    CSVDataModule,
    DigitsDataModule,
    FileImageDataModule,
    ImageFolderDataModule,
)

BASE = [p for p in inspect.signature(BaseImageDataModule.__init__).parameters if p != "self"]
FILE_OWN = ["val_fraction", "on_bad_image", "scan"]
OWN = {
    ImageFolderDataModule: ["root", "predict_dir"],
    CSVDataModule: [
        *("train_csv", "val_csv", "test_csv", "predict_csv", "predict_dir", "path_column", "label_column"),
        *("label_delimiter", "label_columns", "target_columns", "standardize_targets", "allow_empty_labels"),
    ],
}


def _expected(cls: type) -> list[str]:
    if cls is DigitsDataModule:
        own = ["classes", "shots_per_class", "val_fraction", "test_fraction", "split_seed", "image_size"]
        return [*own, "train_transform", *[p for p in BASE if p not in ("image_size", "train_transform")]]
    return [*OWN.get(cls, []), *FILE_OWN, *BASE]


@pytest.mark.parametrize("cls", [FileImageDataModule, ImageFolderDataModule, CSVDataModule, DigitsDataModule])
def test_signature_lists_every_argument_once(cls: type) -> None:
    assert len(BASE) == 11 and "data_config" in BASE  # the shared arguments, declared in the base only
    parameters = inspect.signature(cls).parameters
    assert list(parameters) == _expected(cls)
    for name in BASE:
        if cls is DigitsDataModule and name in ("image_size", "train_transform"):
            continue  # other defaults, declared by the digits
        base = inspect.signature(BaseImageDataModule.__init__).parameters[name]
        assert parameters[name].default == base.default and parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_digits_keep_their_own_defaults() -> None:
    parameters = inspect.signature(DigitsDataModule).parameters
    assert parameters["image_size"].default == 32 and parameters["train_transform"].default == "none"
    data = DigitsDataModule()
    assert data.image_size == 32 and data.train_transform == "none" and data.num_workers == 0


@pytest.mark.parametrize("cls", [ImageFolderDataModule, CSVDataModule, DigitsDataModule])
def test_command_line_parser_lists_every_argument_with_its_default_and_help(cls: type) -> None:
    """jsonargparse (LightningCLI's parser) follows `super().__init__(**kwargs)` to the base's parameters."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    options = {action.dest: action for action in parser._actions if action.dest.startswith("data.")}
    assert set(options) == {f"data.{name}" for name in _expected(cls)}
    assert options["data.batch_size"].default == 32
    assert "Samples per batch and device" in options["data.batch_size"].help  # documented once, in the base
    assert "timm data config" in options["data.data_config"].help


def test_an_unknown_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="batchsize"):
        DigitsDataModule(batchsize=8)  # type: ignore[call-arg]


def _folder(root: Path) -> Path:
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (12, 12)).save(root / "train" / cls / "0.png")
    return root


def test_keyword_arguments_reach_the_base(tmp_path: Path) -> None:
    data = ImageFolderDataModule(_folder(tmp_path), batch_size=3, num_workers=0, seed=7, image_size=16, in_chans=1)
    assert (data.batch_size, data.num_workers, data.seed, data.in_chans) == (3, 0, 7, 1)
    assert data.resolved_config.size == (16, 16)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int, got 0"):
        ImageFolderDataModule(tmp_path, batch_size=0)


@pytest.mark.parametrize(
    ("spec", "augments"),
    [("none", False), (None, False), ("light", True), ("heavy", True), ([{"class_path": "albumentations.Blur"}], True)],
)
def test_augments_training(spec: object, augments: bool) -> None:
    assert DigitsDataModule(train_transform=spec).augments_training is augments  # type: ignore[arg-type]


def test_no_deprecated_data_paths_remain() -> None:
    """An unreleased package ships no compatibility aliases."""
    import lit_transfer.data as data

    assert not hasattr(data, "resolve_data_config")
    for old in ("lit_transfer.data.datamodule", "lit_transfer.data.files", "lit_transfer.data.data_config"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
