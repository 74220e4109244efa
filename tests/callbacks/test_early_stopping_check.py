"""Lightning's EarlyStopping with a freezing policy: the warning when its patience can end a fit before the last
phase, and the fix it names (``min_epochs``) letting that phase train."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from freeze_helpers import Recorder, fixed_data, loader, trainer
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping

from lit_transfer import AutoFreeze, FreezeUnfreeze, TransferClassifier
from lit_transfer.callbacks.early_stopping_check import earliest_stop_epoch, last_phase_start
from lit_transfer.freezing import GradualUnfreeze, LinearProbe, UnfreezeAtEpochs

WARNING = r"EarlyStopping\(monitor='val_loss', patience=1\) can end this fit after epoch 1, before epoch 3"


def _never_improving() -> EarlyStopping:
    """Only the first validation counts as an improvement (any later one would have to beat it by 1e9)."""
    return EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)


def _fit(tmp_path: Path, **trainer_kwargs) -> Recorder:
    torch.manual_seed(0)
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, freeze=FreezeUnfreeze(unfreeze_at_epoch=3)
    )
    recorder = Recorder()
    fit = trainer(tmp_path, 8, [_never_improving(), recorder], **trainer_kwargs)
    fit.fit(model, loader(fixed_data(n=16)), loader(fixed_data(n=8, seed=1)))
    return recorder


def test_a_patience_shorter_than_the_head_phase_warns_and_min_epochs_lets_the_backbone_train(tmp_path) -> None:
    with pytest.warns(UserWarning, match=WARNING + r".*Set `trainer\.min_epochs` to 5"):
        recorder = _fit(tmp_path / "a")
    assert sorted(recorder.epochs) == [0, 1]  # stopped after epoch 1: the backbone never trained
    assert all(len(e["trainable"]) == len(recorder.epochs[0]["trainable"]) for e in recorder.epochs.values())

    with warnings.catch_warnings():
        warnings.filterwarnings("error", "EarlyStopping")
        recorder = _fit(tmp_path / "b", min_epochs=5)  # the warning's fix
    assert sorted(recorder.epochs) == [0, 1, 2, 3, 4]  # held back until 5 epochs, then stopped
    assert len(recorder.epochs[3]["trainable"]) > len(recorder.epochs[2]["trainable"])  # the unfreeze ran


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (FreezeUnfreeze(unfreeze_at_epoch=4), 4),
        (GradualUnfreeze(every_n_epochs=3), 15),  # 6 groups: one more every 3 epochs, all from epoch 15
        (UnfreezeAtEpochs({0: 1, 2: 3, 7: -1}), 7),
        (LinearProbe(), None),
        (AutoFreeze(probe_epochs=2), 2),  # undecided: the plan starts at its decision epoch
        (FreezeUnfreeze(unfreeze_at_epoch=12), None),  # beyond max_epochs: one phase in this run
    ],
)
def test_the_last_phase_starts_where_the_trainable_groups_last_change(policy, expected) -> None:
    policy.bind([f"g{i}" for i in range(6)], 10 if expected != 15 else 20)
    assert last_phase_start(policy, 6, 10 if expected != 15 else 20) == expected


def test_the_earliest_stop_counts_validations_and_min_epochs() -> None:
    def earliest(patience: int, every: int = 1, min_epochs: int | None = None) -> int:
        fit = Trainer(check_val_every_n_epoch=every, min_epochs=min_epochs, logger=False, enable_progress_bar=False)
        return earliest_stop_epoch(EarlyStopping(monitor="val_loss", patience=patience), fit)

    assert earliest(3) == 3  # validations after epochs 0 (the best), 1, 2, 3: the third without improvement stops
    assert earliest(2, every=2) == 5  # validations after epochs 1, 3, 5
    assert earliest(0) == 1  # patience 0 still waits for one validation that does not improve
    assert earliest(3, min_epochs=8) == 7
