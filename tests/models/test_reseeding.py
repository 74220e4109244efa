"""Resume is exact with dropout, drop-path and mixup: the global generators are reseeded before every training batch.

Each case trains 3 epochs uninterrupted, and 2 epochs, then a resume from the checkpoint to 3, and compares every
weight bit for bit (CPU, ``deterministic=True``). The control runs the same with the reseeding switched off and sees
the weights differ, so the comparison can fail.
"""

from __future__ import annotations

import pytest
import torch
from callback_helpers import StopAfter
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback

from lit_transfer import FreezeUnfreeze, TransferClassifier
from lit_transfer.models.reseeding import BatchReseeding

CASES = {
    # a plain DataLoader drawing its iterator's base seed from the global generator, once per epoch
    "loader": ({"drop_rate": 0.2, "drop_path_rate": 0.1}, {}),
    # ... and twice in each epoch after the first with reloads, but once in a resumed run's first epoch
    "loader-reload": ({"drop_rate": 0.2}, {"reload_dataloaders_every_n_epochs": 1}),
    # mixup/CutMix draw from NumPy's global generator
    "mixup": ({"drop_rate": 0.2, "mixup_alpha": 0.4, "cutmix_alpha": 1.0}, {}),
    "digits": ({"drop_rate": 0.2, "drop_path_rate": 0.1}, {}),
}


def _model(**kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=FreezeUnfreeze(1), **kwargs)


def _fit(tmp_path, case: str, epochs: int, ckpt_path=None, model=None, stop_after: int | None = None):
    model_kwargs, trainer_kwargs = CASES[case]
    model = model or _model(**model_kwargs)
    t = trainer(tmp_path, epochs, [StopAfter(stop_after)] if stop_after else [], **trainer_kwargs)
    if case == "digits":
        from lit_transfer.data import DigitsDataModule

        data = DigitsDataModule(classes=[0, 1, 2], shots_per_class=8, batch_size=8, image_size=16)
        t.fit(model, datamodule=data, ckpt_path=ckpt_path)
    else:
        t.fit(model, loader(fixed_data(n=24)), ckpt_path=ckpt_path)
    return model, t


def _interrupted_and_uninterrupted(tmp_path, case):
    torch.manual_seed(123)
    whole, _ = _fit(tmp_path / "whole", case, 3)
    torch.manual_seed(123)
    _, first = _fit(tmp_path / "first", case, 3, stop_after=2)
    first.save_checkpoint(tmp_path / "epoch2.ckpt")
    torch.manual_seed(999)  # the resuming process is in another state
    resumed, second = _fit(tmp_path / "second", case, 3, ckpt_path=tmp_path / "epoch2.ckpt")
    assert second.global_step > first.global_step  # the resume trained
    return whole.state_dict(), resumed.state_dict()


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_run_draws_the_same_dropout_and_mixup_as_the_whole_run(tmp_path, case):
    whole, resumed = _interrupted_and_uninterrupted(tmp_path, case)
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name


def test_without_the_reseeding_the_resume_differs(tmp_path, monkeypatch):
    monkeypatch.setattr(BatchReseeding, "before_batch", lambda self, epoch, batch_idx, rank: None)
    whole, resumed = _interrupted_and_uninterrupted(tmp_path, "loader")
    assert not all(torch.equal(value, resumed[name]) for name, value in whole.items())


def test_the_seed_is_saved_as_a_plain_int_and_differs_between_fits(tmp_path):
    model, t = _fit(tmp_path, "loader", 1)
    t.save_checkpoint(tmp_path / "a.ckpt")
    seed = torch.load(tmp_path / "a.ckpt", weights_only=True)["rng_seed"]
    assert type(seed) is int and seed == model.reseeding.seed
    _fit(tmp_path, "loader", 1, model=model)  # a new fit (no checkpoint) of the same model draws a new seed
    assert model.reseeding.seed != seed


class SaveFinal(Callback):
    """Rank 0 saves the final weights; the largest difference of any parameter across ranks goes with them."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        if trainer.is_global_zero:
            spread = float((gathered[0] - gathered[1]).abs().max())
            torch.save({"state": dict(pl_module.state_dict()), "spread": spread}, self.out)


def _ddp_fit(tmp_path, name: str, stop_after: int | None = None, ckpt_path=None) -> dict:
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = _model(drop_rate=0.2, drop_path_rate=0.1)
    out = str(tmp_path / f"{name}.pt")
    callbacks = [SaveFinal(out), ModelCheckpoint(tmp_path / name, "{epoch}", save_top_k=-1)]
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    t = trainer(tmp_path / name, 2, callbacks, devices=2, strategy="ddp_spawn", limit_train_batches=2)
    t.fit(model, loader(fixed_data(n=32), batch_size=4), ckpt_path=ckpt_path)  # ranks get different samples
    return torch.load(out, weights_only=True)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_resume_with_dropout_is_exact_on_every_rank(tmp_path):
    whole = _ddp_fit(tmp_path, "whole")
    _ddp_fit(tmp_path, "first", stop_after=1)
    resumed = _ddp_fit(tmp_path, "second", ckpt_path=tmp_path / "first" / "epoch=0.ckpt")
    assert whole["spread"] == 0.0 and resumed["spread"] == 0.0  # replicas identical
    for name, value in whole["state"].items():
        assert torch.equal(value, resumed["state"][name]), name
