import pytest
import torch
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint

from lit_transfer import TransferClassifier


class ExplodesAt(TransferClassifier):
    """Returns a NaN loss at one global step (a real fault inside the model's own step)."""

    def __init__(self, nan_step: int, **kwargs):
        super().__init__(**kwargs)
        self.nan_step = nan_step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == self.nan_step else loss


def test_nan_loss_stops_before_the_step_and_keeps_good_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = ExplodesAt(nan_step=6, backbone="test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    on_exception = OnExceptionCheckpoint(dirpath=tmp_path / "ckpt", filename="on_exception")
    t = trainer(tmp_path, 5, [checkpoints, on_exception], enable_checkpointing=True)
    with pytest.raises(FloatingPointError, match=r"NaN|nan") as err:
        t.fit(model, loader(fixed_data()))
    message = str(err.value)
    assert "global step 6" in message and "precision '32-true'" in message and "head=" in message
    saved = torch.load(tmp_path / "ckpt" / "on_exception.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert saved["global_step"] == 6
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
