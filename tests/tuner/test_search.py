"""The search's parts on real Optuna studies and a real tiny fit: the space file, the folds, reporting and pruning,
a study that refuses a worker scoring it differently, and a worker that stops on refused trials."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from cli_helpers import RECIPES
from lightning.pytorch import Callback, Trainer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from segmentation_fixture import make_segmentation_folder

from lit_transfer import TransferClassifier, TransferSegmenter
from lit_transfer.data import DigitsDataModule, SegmentationFolderDataModule
from lit_transfer.errors import DataMismatchError
from lit_transfer.tuner.folds import FoldSplit, FoldSubset, fold_indices
from lit_transfer.tuner.reporting import TrialReporter
from lit_transfer.tuner.search import REFUSALS_IN_A_ROW, REFUSED, SearchSettings, open_study, run_search
from lit_transfer.tuner.space import load_space
from lit_transfer.tuner.study_files import summary, write_study_files


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_space_file_gives_optuna_distributions_and_command_line_overrides(tmp_path: Path) -> None:
    space = load_space(
        _space(
            tmp_path,
            "model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
            "trainer.max_epochs: {low: 2, high: 8, step: 2}\n"
            "model.freeze: {choices: [linear_probe, full_fine_tune]}\n"
            "data.train_transform: {choices: {none: none, shift: [{class_path: albumentations.Affine}]}}\n",
        )
    )
    dists = {p.key: p.distribution for p in space.params}
    assert dists["model.optimizer.init_args.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["trainer.max_epochs"] == IntDistribution(2, 8, step=2)
    assert dists["model.freeze"] == CategoricalDistribution(["linear_probe", "full_fine_tune"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = space.suggest(trial)
    assert 1e-4 <= values["model.optimizer.init_args.lr"] <= 1e-2 and values["trainer.max_epochs"] in (2, 4, 6, 8)
    assert trial.params["data.train_transform"] in ("none", "shift")  # Optuna sees the label, the run the value
    assert values["data.train_transform"] in ("none", [{"class_path": "albumentations.Affine"}])
    flags = space.flags(values)
    assert flags[0] == f"--model.optimizer.init_args.lr={values['model.optimizer.init_args.lr']!r}"
    assert space.values_of(trial.params) == values
    low, high = space.extremes()
    assert low[-1] == "--data.train_transform=none"
    assert high[-1] == '--data.train_transform=[{"class_path": "albumentations.Affine"}]'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lr: {low: 0.1, high: 1}", "keys are `model.*`, `data.*` or `trainer.*`"),
        ("model.lr: {low: 0.1, high: 0.01}", "`low` must be below `high`"),
        ("model.lr: {low: 0, high: 1, log: true}", "a log range needs `low > 0`"),
        ("model.lr: {low: 0.1, hi: 1}", "a range has `low`, `high`"),
        ("model.freeze: {choices: []}", "`choices` must be a non-empty list"),
        ("model.freeze: {choices: [[1, 2]]}", "mapping from a label to the value"),
        ("model.freeze: linear_probe", "give `{low: ..., high: ...}` or `{choices: [...]}`"),
        ("- model.lr", "must map config keys"),
    ],
)
def test_space_file_mistakes_name_the_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=r"space\.yaml") as caught:
        load_space(_space(tmp_path, text + "\n"))
    assert words in str(caught.value)


def test_missing_space_file_says_which() -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("`--space` file 'nowhere.yaml' does not exist")):
        load_space("nowhere.yaml")


def test_shipped_space_parses() -> None:
    keys = [p.key for p in load_space(RECIPES / "tune_space.yaml").params]
    assert keys == ["model.optimizer.init_args.lr", "model.freeze", "model.layer_decay", "data.train_transform"]


def test_folds_are_stratified_a_partition_and_fixed_by_the_seed() -> None:
    labels = np.repeat([0, 1, 2], [9, 6, 3])
    parts = fold_indices(labels, folds=3, seed=7)
    held = [set(h) for _, h in parts]
    assert sorted(i for h in held for i in h) == list(range(18))  # every sample held out exactly once
    for train, held_out in parts:
        assert not set(train) & set(held_out)
        assert np.bincount(labels[held_out]).tolist() == [3, 2, 1]  # each fold keeps the class proportions
    assert fold_indices(labels, 3, seed=7) == parts and fold_indices(labels, 3, seed=8) != parts
    rows = np.random.default_rng(0).random((10, 2))  # regression targets: plain shuffled folds
    assert sorted(i for _, h in fold_indices(rows, 5, seed=0) for i in h) == list(range(10))
    with pytest.raises(ValueError, match="smallest class has 3"):
        fold_indices(labels, folds=4, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        fold_indices(labels, folds=1, seed=0)


def _fit_one_step(model: Any, data: Any, split: FoldSplit, root: Path) -> Trainer:
    """One training and one validation batch with ``split`` cutting the DataModule's data."""
    trainer = Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False, callbacks=[split], default_root_dir=root
    )
    trainer.fit(model, datamodule=data)
    return trainer


def test_fold_split_replaces_the_training_and_validation_sets_of_a_datamodule(tmp_path: Path) -> None:
    data = DigitsDataModule(classes=[0, 1], shots_per_class=6, image_size=16, batch_size=4, train_transform="light")
    model = TransferClassifier("test_resnet", pretrained=False, num_classes=2)
    split = FoldSplit(fold=1, folds=3, seed=0)
    _fit_one_step(model, data, split, tmp_path)
    assert isinstance(data.train_dataset, FoldSubset) and isinstance(data.val_dataset, FoldSubset)
    assert split.sizes == (8, 4) and sorted(data.val_dataset.labels) == [0, 0, 1, 1]
    assert not set(data.train_dataset.indices) & set(data.val_dataset.indices)
    assert data.val_dataset.dataset.transform is not data.train_dataset.dataset.transform  # evaluation pipeline


def test_fold_split_cuts_a_segmentation_training_split_into_plain_folds(tmp_path: Path) -> None:
    root = make_segmentation_folder(tmp_path / "masks", train=6, val=2, test=0, predict=0)
    data = SegmentationFolderDataModule(root, image_size=32, batch_size=2, num_workers=0)
    model = TransferSegmenter("test_resnet", num_classes=data.num_classes, pretrained=False, decoder_channels=16)
    split = FoldSplit(fold=2, folds=3, seed=0)
    trainer = _fit_one_step(model, data, split, tmp_path)
    assert split.sizes == (4, 2) and "val_miou" in trainer.callback_metrics
    train, held = data.train_dataset, data.val_dataset
    assert isinstance(train, FoldSubset) and isinstance(held, FoldSubset)
    assert sorted(train.indices + held.indices) == list(range(6))  # the masks of the training split, once each
    assert held.dataset.masks == train.dataset.masks and held.dataset.transform is not train.dataset.transform


def test_reporter_reports_every_validation_and_a_prune_stops_the_fit() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = TrialReporter(trial, "val_acc", "maximize")
    data = DigitsDataModule(classes=[0, 1], shots_per_class=4, image_size=16, batch_size=4)
    model = TransferClassifier("test_resnet", pretrained=False, num_classes=2)
    trainer = Trainer(
        max_epochs=3, limit_train_batches=1, logger=False, enable_checkpointing=False, callbacks=[reporter]
    )
    trainer.fit(model, datamodule=data)
    assert sorted(study.trials[0].intermediate_values) == [0, 1, 2] and not reporter.pruned
    assert reporter.best == max(reporter.values) and reporter.next_step == 3

    pruning = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = pruning.ask()  # accuracy never reaches 2: pruned at the first report
    reporter = TrialReporter(trial, "val_acc", "maximize", first_step=5)
    trainer = Trainer(
        max_epochs=3, limit_train_batches=1, logger=False, enable_checkpointing=False, callbacks=[reporter]
    )
    trainer.fit(TransferClassifier("test_resnet", pretrained=False, num_classes=2), datamodule=data)
    assert reporter.pruned and trainer.current_epoch == 1  # stopped after the first epoch, as an early stop does
    assert list(pruning.trials[0].intermediate_values) == [5]


def _sqlite_settings(tmp_path: Path, **options: Any) -> SearchSettings:
    """A study ``s`` scored by ``val_acc`` in an SQLite file under ``tmp_path``, with ``options``."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return SearchSettings(tmp_path / "tune" / "s", storage, "s", "val_acc", "maximize", **options)


def test_a_study_refuses_a_worker_that_scores_it_differently(tmp_path: Path) -> None:
    settings = _sqlite_settings(tmp_path, seed=3)
    study = open_study(settings)
    assert study.user_attrs == {"metric": "val_acc", "direction": "maximize", "folds": 0, "fold_seed": 3}
    assert open_study(settings).study_name == "s"  # the same command joins it
    other = SearchSettings(**{**settings.__dict__, "metric": "val_loss", "direction": "minimize"})
    with pytest.raises(ValueError, match="metric 'val_acc' \\(this command: 'val_loss'\\)"):
        open_study(other)


def test_a_storage_that_cannot_be_opened_says_so_without_the_password(tmp_path: Path) -> None:
    settings = SearchSettings(
        out_dir=tmp_path,
        storage="postgresql://user:secret@127.0.0.1:1/db",
        study_name="s",
        metric="val_acc",
        direction="maximize",
    )
    with pytest.raises(ValueError, match=re.escape("`--storage` postgresql://user:***@127.0.0.1:1/db")) as caught:
        open_study(settings)
    assert "secret" not in str(caught.value)


def test_a_worker_stops_after_refused_trials_in_a_row_with_the_last_refusal(tmp_path: Path) -> None:
    space = load_space(str(_space(tmp_path, "data.image_size: {choices: [24, 40]}\n")))
    # refused trials do not count towards max_trials: only the refusals stop this worker (the timeout, if they did not)
    settings = _sqlite_settings(tmp_path, n_trials=None, max_trials=2, timeout=60)
    drawn: list[list[str]] = []

    def fit(overrides: list[str], callbacks: list[Callback]) -> None:  # every value misfits, as the data checks say
        drawn.append(overrides)
        raise DataMismatchError(f"The backbone takes only 32x32 px images, but {overrides[0]} gives another size.")

    study = open_study(settings)
    with pytest.raises(DataMismatchError, match=f"refused {REFUSALS_IN_A_ROW} trials in a row") as caught:
        run_search(study, space, settings, fit)
    assert len(drawn) == REFUSALS_IN_A_ROW
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * REFUSALS_IN_A_ROW
    assert all(t.user_attrs[REFUSED].endswith("gives another size.") for t in trials)
    assert f"trial {trials[-1].number} (" in str(caught.value) and str(caught.value).endswith(
        trials[-1].user_attrs[REFUSED]
    )
    files = write_study_files(study, settings.out_dir, lambda trial: "")
    assert f"Refused by the data checks (failed): #0, #1, #2, #3, #4; the last: {trials[-1].user_attrs[REFUSED]}" in (
        summary(study, files, "lit-transfer fit --config best.yaml")
    )
