import json
import warnings
from pathlib import Path

import pytest
import torch
from callback_helpers import StopAfter
from freeze_helpers import GatherParams, PlainModule, Recorder, fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm

from lit_transfer import TransferClassifier
from lit_transfer.callbacks import LayerFreezing
from lit_transfer.errors import CheckpointMismatchError
from lit_transfer.freezing import FreezeUnfreeze, FreezingPolicy, GradualUnfreeze, LinearProbe, UnfreezeAtEpochs
from lit_transfer.freezing.layer_groups import layer_groups


def classifier(policy, **kwargs):
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=policy, **kwargs)


def test_linear_probe_trains_only_the_head_and_frozen_bn_stats_do_not_move(tmp_path):
    model = classifier(LinearProbe())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = fixed_data()
    trainer(tmp_path, 2).fit(model, loader(data), loader(data))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"backbone.fc.weight", "backbone.fc.bias"}
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("backbone.fc"))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_means_frozen_after_training(tmp_path, optimizer):
    """Train everything for an epoch, then freeze: momentum and weight decay must not move frozen tensors."""
    factory = {
        "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2),
        "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
    }[optimizer]
    model = classifier(UnfreezeAtEpochs({0: -1, 1: 1}), optimizer=factory)
    snapshots = {}

    class Snapshot(Recorder):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.current_epoch] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    names_before = [n for n, _ in model.named_parameters()]
    types_before = [type(m) for m in model.modules()]
    trainer(tmp_path, 3, [Snapshot()]).fit(model, loader(fixed_data()))
    frozen = [n for n in snapshots[1] if not n.startswith("backbone.fc")]
    assert frozen
    for name in frozen:
        assert torch.equal(snapshots[1][name], snapshots[2][name]), name
    assert not torch.equal(snapshots[1]["backbone.fc.weight"], snapshots[2]["backbone.fc.weight"])
    assert not torch.equal(initial["backbone.conv1.0.weight"], snapshots[0]["backbone.conv1.0.weight"])
    # no module swaps (a FrozenBatchNorm would turn parameters into buffers)
    assert [n for n, _ in model.named_parameters()] == names_before
    assert [type(m) for m in model.modules()] == types_before


def test_bn_modes_follow_the_phase_across_validation(tmp_path):
    model = classifier(FreezeUnfreeze(unfreeze_at_epoch=2))
    recorder = Recorder()
    data = fixed_data()
    trainer(tmp_path, 3, [recorder]).fit(model, loader(data), loader(data))
    bn_names = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and "fc" not in n]
    for epoch in (0, 1):
        assert not set(bn_names) & set(recorder.epochs[epoch]["training"]), f"frozen BN in train mode at {epoch}"
        assert "backbone.fc" in recorder.epochs[epoch]["training"]
    assert set(bn_names) <= set(recorder.epochs[2]["training"]), "BN stayed in eval mode after the unfreeze"


def test_frozen_bn_output_equals_eval_output(tmp_path):
    model = classifier(LinearProbe())
    trainer(tmp_path, 1).fit(model, loader(fixed_data(shift=5.0)))
    bn = model.backbone.layer1[0].bn1
    assert not bn.training
    x = torch.randn(4, bn.num_features, 4, 4) + 5
    y_frozen = bn(x)
    bn.eval()
    assert torch.allclose(y_frozen, bn(x))


def test_train_bn_keeps_batchnorm_affine_trainable(tmp_path):
    model = classifier(LinearProbe(train_bn=True))
    recorder = Recorder()
    trainer(tmp_path, 1, [recorder]).fit(model, loader(fixed_data()))
    trainable = set(recorder.epochs[0]["trainable"])
    assert "backbone.layer1.0.bn1.weight" in trainable
    assert "backbone.layer1.0.conv1.weight" not in trainable
    assert "backbone.layer1.0.bn1" in recorder.epochs[0]["training"]


def test_works_on_any_lightning_module_with_a_backbone(tmp_path):
    model = PlainModule()
    callback = LayerFreezing(FreezeUnfreeze(unfreeze_at_epoch=1))
    recorder = Recorder()
    trainer(tmp_path, 2, [callback, recorder]).fit(model, loader(fixed_data()))
    assert [g.name for g in callback.groups] == ["stem", "1", "3", "head"]
    assert recorder.epochs[0]["trainable"] == ("head.weight", "head.bias")
    assert len(recorder.epochs[1]["trainable"]) == len(list(model.parameters()))


def test_one_callback_over_two_fits_sets_the_modes_of_the_module_it_trains_now(tmp_path):
    """The modes worked out for the first module must not be set again on the second (or left off it)."""
    callback = LayerFreezing("linear_probe")
    first, second = PlainModule(), PlainModule()
    trainer(tmp_path, 1, [callback]).fit(first, loader(fixed_data()))
    recorder = Recorder()
    trainer(tmp_path, 1, [callback, recorder]).fit(second, loader(fixed_data()))
    assert "backbone.1" not in recorder.epochs[0]["training"]  # its BatchNorm, frozen: eval mode
    assert "head" in recorder.epochs[0]["training"]


def test_missing_backbone_attribute_is_a_clear_error(tmp_path):
    with pytest.raises(AttributeError, match="backbone_attr"):
        trainer(tmp_path, 1, [LayerFreezing("linear_probe", backbone_attr="encoder")]).fit(
            PlainModule(), loader(fixed_data())
        )


def _run(tmp_path, policy, epochs, ckpt_path=None, every_epoch=False, stop_after=None):
    model = classifier(policy, layer_decay=0.8, frozen_lr_mult=0.5)
    recorder = Recorder()
    callbacks = [recorder] + ([StopAfter(stop_after)] if stop_after else [])
    if every_epoch:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}"))
    data = fixed_data(n=24)
    t = trainer(tmp_path, epochs, callbacks, enable_checkpointing=every_epoch)
    t.fit(model, loader(data), loader(data), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return model, recorder, t


POLICIES = {
    "unfreeze_before_resume": FreezeUnfreeze(unfreeze_at_epoch=1),
    "unfreeze_at_resume": FreezeUnfreeze(unfreeze_at_epoch=2),
    "unfreeze_after_resume": FreezeUnfreeze(unfreeze_at_epoch=3),
    "gradual": GradualUnfreeze(every_n_epochs=1),
    "unfreeze_at_epochs": UnfreezeAtEpochs({1: 2, 3: -1}),
}


@pytest.mark.parametrize("policy_id", list(POLICIES))
def test_resume_is_exact(tmp_path, policy_id):
    policy = POLICIES[policy_id]
    full, full_rec, _ = _run(tmp_path / "a", policy, 4)
    _, interrupted, _ = _run(tmp_path / "b", policy, 4, every_epoch=True, stop_after=2)
    assert set(interrupted.epochs) == {0, 1}
    resumed, res_rec, t = _run(tmp_path / "c", policy, 4, ckpt_path=tmp_path / "b" / "epoch=1.ckpt")
    assert t.global_step > 0
    for epoch in (2, 3):  # the phase of each resumed epoch, its BN modes, the group LRs
        assert res_rec.epochs[epoch]["trainable"] == full_rec.epochs[epoch]["trainable"], epoch
        assert res_rec.epochs[epoch]["training"] == full_rec.epochs[epoch]["training"], epoch
        assert res_rec.epochs[epoch]["lrs"] == full_rec.epochs[epoch]["lrs"], epoch
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_into_another_backbone_is_refused(tmp_path):
    _run(tmp_path / "b", FreezeUnfreeze(1), 1, every_epoch=True)
    model = TransferClassifier("test_convnext", num_classes=3, pretrained=False, freeze=FreezeUnfreeze(1))
    data = fixed_data(n=24)
    with pytest.raises(CheckpointMismatchError, match=r"'test_resnet'.*'test_convnext'"):
        trainer(tmp_path / "c", 2).fit(model, loader(data), ckpt_path=tmp_path / "b" / "epoch=0.ckpt")


def test_layout_check_names_both_layouts():
    callback = LayerFreezing("freeze_unfreeze")
    callback.groups = layer_groups(classifier("linear_probe").backbone)
    with pytest.raises(CheckpointMismatchError, match=r"saved .*current"):
        callback.load_state_dict({"trainable_groups": 1, "layout": [["stem", 1]], "policy": {}})


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_unsupported_strategies_fail_in_setup(tmp_path, strategy):
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    cls = {"fsdp": FSDPStrategy, "deepspeed": DeepSpeedStrategy}[strategy]
    callback = LayerFreezing("freeze_unfreeze")

    class FakeTrainer:
        pass

    fake = FakeTrainer()
    fake.strategy = cls.__new__(cls)
    with pytest.raises(ValueError, match=cls.__name__):
        callback._check_strategy(fake)


class MissingFrozen(PlainModule):
    """The classic mistake: an optimizer built from the parameters that require grad when it is built."""

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def test_an_optimizer_without_the_frozen_parameters_is_refused_at_fit_start(tmp_path):
    class NoStep(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            raise AssertionError("the check must come before the first step")

    with pytest.raises(ValueError, match=r"every parameter.*backbone\.0\.weight.*filter\(lambda p: p\.requires_grad"):
        trainer(tmp_path, 2, [LayerFreezing(FreezeUnfreeze(1)), NoStep()]).fit(MissingFrozen(), loader(fixed_data()))
    # the same module with an optimizer over every parameter trains through the unfreeze
    model = PlainModule()
    before = model.backbone[0].weight.detach().clone()
    trainer(tmp_path, 2, [LayerFreezing(FreezeUnfreeze(1))]).fit(model, loader(fixed_data()))
    assert not torch.equal(before, model.backbone[0].weight)


class NoSync(LayerFreezing):
    """LayerFreezing that leaves DDP's registration as it was at the wrap (the negative control)."""

    def _follow_in_ddp(self, trainer, pl_module):
        return None


class Refreeze(FreezingPolicy):
    """Every group at epoch 0, the head alone at epoch 1, every group again from epoch 2."""

    name = "refreeze"

    def trainable_depth(self, epoch: int, num_groups: int) -> int:
        return 1 if epoch == 1 else num_groups

    def is_monotone(self) -> bool:
        return False


def _ddp_run(
    tmp_path: Path,
    callback_cls=LayerFreezing,
    accumulate: int = 1,
    policy: FreezingPolicy | None = None,
    epochs: int = 3,
    ckpt_path: Path | None = None,
    every_epoch: bool = False,
) -> dict:
    torch.manual_seed(0)
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "diff.json"
    data = fixed_data(n=32)
    callbacks = [callback_cls(policy or FreezeUnfreeze(unfreeze_at_epoch=1)), GatherParams(str(out))]
    if every_epoch:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}"))
    t = trainer(
        tmp_path,
        epochs,
        callbacks,
        devices=2,
        strategy="ddp_spawn",
        accumulate_grad_batches=accumulate,
        enable_checkpointing=every_epoch,
    )
    t.fit(model, loader(data, batch_size=4), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return json.loads(out.read_text())


@pytest.mark.ddp
@pytest.mark.parametrize("accumulate", [1, 2])
def test_ddp_replicas_identical_after_unfreeze(tmp_path, accumulate):
    result = _ddp_run(tmp_path, accumulate=accumulate)
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_without_sync_drifts(tmp_path):
    """The negative control: the same run without DDP following the unfreeze leaves the replicas apart."""
    result = _ddp_run(tmp_path, callback_cls=NoSync)
    assert result["max"] > 1e-4
    assert result["per_param"]["backbone.fc.weight"] == 0.0  # the head was registered with DDP from the start


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("callback_cls", [LayerFreezing, NoSync])
def test_ddp_resume_into_the_unfrozen_phase(tmp_path, callback_cls):
    """Resumed after the unfreeze, DDP was wrapped around the phase-0 set: the restored phase must reach it."""
    _ddp_run(tmp_path / "a", epochs=2, every_epoch=True)
    result = _ddp_run(tmp_path / "b", callback_cls, epochs=3, ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    if callback_cls is LayerFreezing:
        assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}
    else:  # the negative control: the restored phase trains, but DDP averages only the head
        assert result["max"] > 1e-4


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_refreezing_policy_needs_no_unused_parameter_detection(tmp_path):
    """Trainable set all -> head -> all under plain `strategy="ddp_spawn"`: no reducer stall, replicas equal."""
    result = _ddp_run(tmp_path, policy=Refreeze())
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}


def _random_backbone_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "frozen random features learn nothing" in str(w.message)]


def test_freezing_a_random_backbone_warns_once_and_not_on_resume_or_full_fine_tune(tmp_path):
    data = fixed_data()
    with pytest.warns(UserWarning) as record:
        trainer(tmp_path, 1).fit(classifier("freeze_unfreeze"), loader(data), loader(data))
    [message] = _random_backbone_warnings(record)
    assert message.startswith("`freeze: freeze_unfreeze` freezes") and "--model.freeze full_fine_tune" in message
    last = next(tmp_path.rglob("*.ckpt"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer(tmp_path / "resumed", 2).fit(classifier("freeze_unfreeze"), loader(data), loader(data), ckpt_path=last)
        trainer(tmp_path / "full", 1).fit(classifier("full_fine_tune"), loader(data), loader(data))
        trained = TransferClassifier.load_from_checkpoint(last)  # trained weights, though `pretrained` is False
        trainer(tmp_path / "loaded", 1).fit(trained, loader(data), loader(data))
    assert trained.hparams["pretrained"] is False
    assert not _random_backbone_warnings(record)


def test_freezing_a_pretrained_backbone_does_not_warn(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in classifier("full_fine_tune").backbone.state_dict().items()}, str(weights))
    data = fixed_data()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = TransferClassifier("test_resnet", num_classes=3, pretrained=str(weights), freeze="linear_probe")
        trainer(tmp_path, 1).fit(model, loader(data), loader(data))
    assert not _random_backbone_warnings(record)
