"""GPU-only checks: fp16 mixed precision with a GradScaler through an unfreeze and an optimizer swap, and resume.

CPU machines (and CI) skip these: Lightning turns ``16-mixed`` into ``bf16-mixed`` on CPU, without a scaler.
"""

from functools import partial

import pytest
import torch
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_transfer import FreezeUnfreeze, TransferClassifier
from lit_transfer.callbacks import OptimizerSwap

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class ScaleTrace(Callback):
    def __init__(self) -> None:
        self.scales: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.scales.append(trainer.precision_plugin.scaler.get_scale())
        self.losses.append(float(outputs["loss"]))


def _fit(tmp_path, epochs, ckpt_path=None):
    torch.manual_seed(0)
    model = TransferClassifier(
        "resnet10t",
        num_classes=3,
        pretrained=False,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
    )
    trace = ScaleTrace()
    callbacks = [
        OptimizerSwap("torch.optim.SGD", optimizer_kwargs={"momentum": 0.9}, at_epoch=2, lr="keep"),
        ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}"),
        trace,
    ]
    t = trainer(tmp_path, epochs, callbacks, accelerator="gpu", precision="16-mixed", enable_checkpointing=True)
    t.fit(model, loader(fixed_data(n=64, size=64), batch_size=16), ckpt_path=ckpt_path)
    return t, trace


def test_fp16_scaler_through_unfreeze_and_swap(tmp_path):
    t, trace = _fit(tmp_path, 4)
    assert t.precision_plugin.precision == "16-mixed" and t.precision_plugin.scaler is not None
    assert all(torch.isfinite(torch.tensor(trace.losses)))
    assert min(trace.scales) > 1
    assert type(t.optimizers[0]).__name__ == "SGD"
    saved = torch.load(tmp_path / "epoch=2.ckpt", weights_only=True)
    saved_scale = float(saved["MixedPrecision"]["scale"])
    resumed, resumed_trace = _fit(tmp_path / "resumed", 4, ckpt_path=tmp_path / "epoch=2.ckpt")
    # the restored scale: equal, or changed once by the first resumed step (halved on overflow, grown on schedule)
    assert saved_scale / 2 <= resumed_trace.scales[0] <= saved_scale * 2
    assert type(resumed.optimizers[0]).__name__ == "SGD"
    assert resumed.precision_plugin.scaler.get_scale() > 1
