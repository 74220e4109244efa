"""The default optimizer: torch's fastest AdamW for the parameters' device, with the per-tensor loop's updates."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch import Callback

from lit_transfer import TransferClassifier
from lit_transfer.models.optimization import ADAMW_TOLERANCE, default_optimizer, fastest_adamw_options
from lit_transfer.optim.param_groups import build_param_groups


def _model() -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, layer_decay=0.7)


def test_fit_on_cpu_uses_the_fused_adamw(tmp_path):
    model = _model()
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data(n=16)))
    optimizer = t.optimizers[0]
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["fused"] is True
    assert all(group["fused"] for group in optimizer.param_groups)


def test_a_given_optimizer_is_left_as_configured(tmp_path):
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, optimizer=partial(torch.optim.AdamW, lr=1e-3)
    )
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data(n=16)))
    assert t.optimizers[0].defaults["fused"] is None


def test_choice_follows_what_torch_runs():
    cpu = [torch.zeros(3, requires_grad=True)]
    assert fastest_adamw_options(cpu) == {"fused": True}
    # a GradScaler (16-mixed) needs the optimizer to leave unscaling to it
    assert fastest_adamw_options(cpu, grad_scaler=True) == {"foreach": True}
    assert fastest_adamw_options([]) == {}
    # complex parameters have no fused kernel: the multi-tensor implementation
    assert fastest_adamw_options([*cpu, torch.zeros(2, dtype=torch.complex64, requires_grad=True)]) == {"foreach": True}


def test_fused_updates_stay_within_the_documented_tolerance_of_the_per_tensor_loop():
    """5 steps with the same gradients, every param group of the classifier (layer decay, no-decay groups)."""
    model = _model()
    backbones = [copy.deepcopy(model.backbone) for _ in range(2)]
    optimizers = []
    for backbone, options in zip(backbones, [None, {"foreach": False, "fused": False}]):
        groups = build_param_groups(model.layer_groups, layer_decay=0.7)
        ours = [dict(g, params=[dict(backbone.named_parameters())[n] for n in _names(model, g)]) for g in groups]
        if options is None:
            optimizers.append(default_optimizer(ours))
        else:
            optimizers.append(torch.optim.AdamW(ours, lr=1e-3, weight_decay=0.05, **options))
    assert optimizers[0].defaults["fused"] is True and optimizers[1].defaults["fused"] is False
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=generator) for p in backbones[0].parameters()]
        for backbone, optimizer in zip(backbones, optimizers):
            for param, grad in zip(backbone.parameters(), grads):
                param.grad = grad.clone()
            optimizer.step()
    start = dict(model.backbone.named_parameters())
    for (name, fused), reference in zip(backbones[0].named_parameters(), backbones[1].parameters()):
        assert not torch.equal(fused, start[name]), name  # it moved
        assert (fused - reference).abs().max().item() <= ADAMW_TOLERANCE, name


def _names(model: TransferClassifier, param_group: dict) -> list[str]:
    """Backbone parameter names of a param group (identity lookup)."""
    names = {id(p): n for n, p in model.backbone.named_parameters()}
    return [names[id(p)] for p in param_group["params"]]


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_fused_adamw_trains_under_cpu_mixed_precision(tmp_path, precision):
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t = trainer(tmp_path, 1, precision=precision)
    t.fit(model, loader(fixed_data(n=16)))
    assert t.optimizers[0].defaults["fused"] is True
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


class _HeadLR(Callback):
    """The head group's LR before every optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[-1]["lr"])


def test_a_run_bounded_by_max_steps_warms_up_for_warmup_epochs_then_decays(tmp_path):
    """Warmup is `warmup_epochs` epochs of optimizer steps, whatever bounds the run (`max_steps` here)."""
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    lrs = _HeadLR()
    t = trainer(tmp_path, None, callbacks=[lrs], max_steps=12)  # 4 steps an epoch: warmup over the first 4
    t.fit(model, loader(fixed_data(n=32)))
    assert len(lrs.lrs) == 12
    peak = lrs.lrs.index(max(lrs.lrs))
    assert peak == 4, lrs.lrs
    assert all(a < b for a, b in zip(lrs.lrs[:4], lrs.lrs[1:5]))  # rising to the peak
    assert all(a > b for a, b in zip(lrs.lrs[4:], lrs.lrs[5:]))  # then decaying for the rest of the run


class _Stream(torch.utils.data.IterableDataset):
    """16 tiny images as a stream: no length, so no epoch of known size."""

    def __iter__(self):
        data = fixed_data(n=16)
        return iter(data[i] for i in range(len(data)))


def test_the_default_schedule_refuses_an_epoch_of_unknown_length(tmp_path):
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    with pytest.raises(ValueError, match=r"no known length.*schedule given in epochs"):
        trainer(tmp_path, None, max_steps=4).fit(model, torch.utils.data.DataLoader(_Stream(), batch_size=8))


def test_the_default_schedule_refuses_a_run_of_unknown_length(tmp_path):
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    with pytest.raises(ValueError, match=r"needs the run's length in optimizer steps.*`trainer.max_steps`"):
        trainer(tmp_path, 1).fit(model, torch.utils.data.DataLoader(_Stream(), batch_size=8))
