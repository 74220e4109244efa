"""SurgicalFineTune: any set of groups trains with the head; LayerFreezing applies and checkpoints masks."""

from __future__ import annotations

import pytest
import torch
from callback_helpers import StopAfter
from freeze_helpers import Recorder, fixed_data, loader, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_transfer import SurgicalFineTune, TransferClassifier
from lit_transfer.freezing import resolve_policy

NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]  # test_resnet's coarse groups


def classifier(policy, **kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=policy, **kwargs)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([0], [True, False, False, False, False, True]),  # first group + head
        ([-2], [False, False, False, False, True, True]),  # last group + head
        (["layer2", 1], [False, True, True, False, False, True]),
        (["head"], [False, False, False, False, False, True]),
        ([-6, 5], [True, False, False, False, False, True]),
    ],
)
def test_masks_from_indices_and_names(groups, expected):
    policy = SurgicalFineTune(groups=groups)
    policy.bind(NAMES)
    assert [policy.trainable_mask(epoch, 6) for epoch in (0, 7)] == [expected, expected]
    first = expected.index(True)
    assert policy.trainable_depth(0, 6) == 6 - first  # the depth: no group below it is frozen-then-unfrozen


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (["layer9"], r"no layer group 'layer9'.*0='stem', 1='layer1'.*5='head'"),
        (["layr1"], r"Did you mean 'layer1'"),
        ([6], r"index 6 is out of range .* 6 layer groups.*0='stem'"),
        ([-7], r"index -7 is out of range"),
    ],
)
def test_bad_groups_list_the_models_groups(groups, match):
    with pytest.raises(ValueError, match=match):
        SurgicalFineTune(groups=groups).bind(NAMES)


@pytest.mark.parametrize("groups", [[], [1.5], [True], [None], [""]])
def test_bad_group_entries_are_refused_at_construction(groups):
    with pytest.raises(ValueError, match="`groups`"):
        SurgicalFineTune(groups=groups)


def test_config_round_trip_and_yaml_forms():
    policy = SurgicalFineTune(groups=["layer1", -2], train_bn=True)
    assert resolve_policy(policy.to_config()) == policy
    assert resolve_policy({"policy": "surgical", "groups": [0]}) == SurgicalFineTune(groups=[0])
    assert resolve_policy("surgical") == SurgicalFineTune(groups=[0])


def test_a_bad_name_stops_fit_before_training(tmp_path):
    model = classifier(SurgicalFineTune(groups=["block9"]))
    with pytest.raises(ValueError, match=r"no layer group 'block9'.*'layer4'"):
        trainer(tmp_path, 1).fit(model, loader(fixed_data()))


@pytest.mark.parametrize(("groups", "moved"), [([0], {"stem", "head"}), ([-2], {"layer4", "head"})])
def test_only_the_chosen_groups_and_the_head_move(tmp_path, groups, moved):
    model = classifier(SurgicalFineTune(groups=groups), frozen_lr_mult=0.5)
    before = {g.name: [p.detach().clone() for p in g.params] for g in model.layer_groups}
    buffers = {n: b.clone() for n, b in model.named_buffers() if "running_mean" in n}
    recorder = Recorder()
    trainer(tmp_path, 2, [recorder]).fit(model, loader(fixed_data()))
    changed = {
        g.name for g in model.layer_groups if any(not torch.equal(a, p) for a, p in zip(before[g.name], g.params))
    }
    assert changed == moved
    stats_moved = {n.split(".")[1] for n, b in model.named_buffers() if n in buffers and not torch.equal(buffers[n], b)}
    group_of = {"conv1": "stem", "bn1": "stem"}
    assert {group_of.get(n, n) for n in stats_moved} <= moved  # frozen BN statistics stay put
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"backbone.{n}" for g in model.layer_groups if g.name in moved for n in g.param_names}
    # no trainable group lies above a frozen-then-unfrozen one: `frozen_lr_mult` touches no group here
    lrs = dict((name, lr) for name, lr, _ in recorder.epochs[0]["lrs"])
    if groups == [0]:
        assert lrs["stem"] == pytest.approx(lrs["head"])


def _run(tmp_path, policy, epochs, ckpt_path=None, stop_after=None):
    model = classifier(policy, layer_decay=0.8)
    recorder = Recorder()
    callbacks = [recorder, ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    data = fixed_data(n=24)
    t = trainer(tmp_path, epochs, callbacks)
    t.fit(model, loader(data), ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return model, recorder


def test_resume_restores_the_mask(tmp_path):
    policy = SurgicalFineTune(groups=["layer1"])
    full, full_rec = _run(tmp_path / "a", policy, 3)
    _run(tmp_path / "b", SurgicalFineTune(groups=["layer1"]), 3, stop_after=1)
    state = torch.load(tmp_path / "b" / "epoch=0.ckpt", weights_only=True)["callbacks"]
    saved = next(v for k, v in state.items() if k.startswith("LayerFreezing"))
    assert saved["trainable_mask"] == [False, True, False, False, False, True] and saved["trainable_groups"] == 2
    resumed, res_rec = _run(tmp_path / "c", SurgicalFineTune(groups=["layer1"]), 3, tmp_path / "b" / "epoch=0.ckpt")
    assert res_rec.epochs[1]["trainable"] == full_rec.epochs[1]["trainable"]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
