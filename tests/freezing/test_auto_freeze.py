"""AutoFreeze: linear probe, one measurement, a plan that trains, checkpoints, resumes and agrees across DDP ranks."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from callback_helpers import StopAfter
from cli_helpers import RECIPES, TINY
from freeze_helpers import GatherParams, PlainModule, Recorder, fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, IterableDataset, Subset

from lit_transfer import AutoFreeze, LayerFreezing, TransferClassifier
from lit_transfer.data import DigitsDataModule
from lit_transfer.freezing import FreezeUnfreeze, resolve_policy
from lit_transfer.freezing.measure import measurement_batches, relative_gradient_norms
from lit_transfer.training_state import seeded_rng

NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def classifier(policy, **kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=policy, **kwargs)


# ------------------------------------------------------------------------------------------------ the decision
def test_less_data_trains_fewer_groups_nearest_the_head():
    norms = [0.5, 0.05, 0.2, 0.1, 0.4, 2.0]  # the head's (last) norm does not count; the depth does not follow them
    masks = [AutoFreeze().decide(norms, samples_per_class=n, epoch=1).mask for n in (1, 2, 5, 10, 10**5)]
    sizes = [sum(mask) for mask in masks]
    assert sizes == sorted(sizes) and sizes[0] == 2 and sizes[-1] == 6  # last group + head ... all groups
    assert masks[0] == (False, False, False, False, True, True)
    assert masks[3] == (True,) * 6  # all_groups_at=10 samples per class: every group
    for small, large in itertools.pairwise(masks):
        assert all(b or not a for a, b in zip(small, large))  # more data never freezes a group that trained
        assert list(small) == sorted(small)  # the trained groups are the ones nearest the head


def test_rates_follow_the_layer_decay_or_the_norms():
    norms = [0.01, 0.05, 0.2, 0.1, 0.4, 2.0]
    plan = AutoFreeze(layer_decay=0.5).decide(norms, samples_per_class=1000, epoch=3)
    assert plan.lr_mults == (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0)  # 0.5 ** steps below the head
    assert plan.epoch == 3
    shallow = AutoFreeze(layer_decay=0.5).decide(norms, samples_per_class=1, epoch=3)
    assert shallow.lr_mults == (1.0, 1.0, 1.0, 1.0, 0.5, 1.0)  # frozen groups keep 1
    rgn = AutoFreeze(lr_rule="rgn", min_lr_mult=0.2).decide(norms, samples_per_class=1000, epoch=3)
    assert rgn.lr_mults == (0.2, 0.2, 0.5, 0.25, 1.0, 1.0)  # norm / largest below the head, floored


def test_the_probe_comes_first_and_the_plan_follows():
    policy = AutoFreeze(probe_epochs=2)
    assert policy.trainable_mask(1, 6) == [False] * 5 + [True]
    assert policy.awaits_plan(2) and not policy.awaits_plan(1)
    policy.decide([0.1, 0.1, 0.1, 0.1, 1.0, 1.0], samples_per_class=1, epoch=2)
    assert policy.trainable_mask(1, 6) == [False] * 5 + [True]
    assert policy.trainable_mask(5, 6) == [False] * 4 + [True, True]
    assert policy.trainable_depth(5, 6) == 2 and not policy.awaits_plan(5)
    state = policy.state_dict()
    again = AutoFreeze(probe_epochs=2)
    again.load_state_dict(json.loads(json.dumps(state)))  # plain values
    assert again.plan == policy.plan


def test_fractional_probe_epochs_follow_max_epochs():
    policy = AutoFreeze(probe_epochs=0.25)
    policy.bind(NAMES, max_epochs=10)
    assert policy.decision_epoch == 2
    with pytest.raises(ValueError, match=r"fraction of `max_epochs`.*max_epochs is -1"):
        policy.bind(NAMES, max_epochs=-1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probe_epochs": 0}, "probe_epochs"),
        ({"probe_epochs": 1.5}, "probe_epochs"),
        ({"probe_epochs": True}, "probe_epochs"),
        ({"probe_epochs": "1"}, "probe_epochs"),
        ({"measure_batches": 0}, "measure_batches"),
        ({"all_groups_at": 1}, "all_groups_at"),
        ({"lr_rule": "norms"}, "lr_rule"),
        ({"layer_decay": 0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"min_lr_mult": 0}, "min_lr_mult"),
        ({"min_lr_mult": 2.0}, "min_lr_mult"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=f"`{match}`"):
        AutoFreeze(**kwargs)
    with pytest.raises(ValueError, match=f"`{match}`"):
        resolve_policy({"policy": "auto", **kwargs})


def test_names_and_configs_round_trip():
    assert resolve_policy("auto") == AutoFreeze()
    policy = resolve_policy({"policy": "auto", "probe_epochs": 2, "train_bn": True})
    assert isinstance(policy, AutoFreeze) and policy.probe_epochs == 2 and policy.train_bn
    assert resolve_policy(policy.to_config()) == policy


# --------------------------------------------------------------------------------------------- the measurement
def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("wrapped", [False, True], ids=["dataset", "subset"])
def test_the_measurement_leaves_generators_modes_flags_and_augmentations_as_they_were(wrapped):
    data = DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=8, train_transform="light", seed=3)
    data.setup("fit")
    loader_ = data.train_dataloader()
    dataset = loader_.dataset
    if wrapped:  # a user's loader over torch's Subset of the augmented dataset
        loader_ = DataLoader(Subset(dataset, range(len(dataset))), batch_size=8)
    model = classifier("auto")
    groups = model.layer_groups
    model.train()
    for group in groups[:-2]:
        for p in group.params:
            p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    dataset.set_epoch(1)
    expected_sample = dataset[5][0].clone()
    dataset.set_epoch(1)
    torch.manual_seed(7)
    before = _rng_states()

    with seeded_rng(0):
        batches = measurement_batches(SimpleNamespace(train_dataloader=loader_), count=2, seed=0)
        norms = relative_gradient_norms(model, groups, batches)

    after = _rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    assert torch.equal(dataset[5][0], expected_sample)  # the training pipeline's generator did not move
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert len(batches) == 2 and len(batches[0][0]) == 8 and len(norms) == len(groups)
    assert all(v > 0 for v in norms)
    with seeded_rng(0):  # the same seed draws the same subset, augmented alike: the same numbers
        again = relative_gradient_norms(
            model, groups, measurement_batches(SimpleNamespace(train_dataloader=loader_), count=2, seed=0)
        )
    assert again == norms


# ------------------------------------------------------------------------------------------------------- a run
class PlanProbe(Callback):
    """Keeps what the LayerFreezing callback stored at the end of training."""

    def on_train_end(self, trainer, pl_module):
        freezing = next(c for c in trainer.callbacks if isinstance(c, LayerFreezing))
        self.state = freezing.state_dict()


def _run(tmp_path, policy, epochs, ckpt_path=None, stop_after=None):
    model = classifier(policy)  # no model-level decay: AutoFreeze owns the rates
    recorder, probe = Recorder(), PlanProbe()
    callbacks = [
        recorder,
        probe,
        ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}"),
    ]
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    data = fixed_data(n=24)
    t = trainer(tmp_path, epochs, callbacks)
    t.fit(model, loader(data), ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return model, recorder, probe.state


def test_probe_then_plan_with_rates_in_optimizer_and_schedule(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _, auto, state = _run(tmp_path / "a", AutoFreeze(), 3)
    plan = state["policy_state"]["plan"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AutoFreeze:")]
    assert len(lines) == 1 and "samples/class; relative gradient norm stem" in lines[0] and "from epoch 1" in lines[0]
    assert plan["epoch"] == 1 and plan["samples_per_class"] == 8.0  # 24 samples, 3 classes
    assert state["trainable_mask"] == plan["mask"] and state["trainable_groups"] == sum(plan["mask"])
    assert auto.epochs[0]["trainable"] == ("backbone.fc.weight", "backbone.fc.bias")
    model = classifier("auto")
    chosen = {f"backbone.{n}" for g, flag in zip(model.layer_groups, plan["mask"]) if flag for n in g.param_names}
    assert set(auto.epochs[1]["trainable"]) == set(auto.epochs[2]["trainable"]) == chosen
    # the same run with FreezeUnfreeze: the same schedule, so each group's LR ratio is its multiplier, every epoch
    _, plain, _ = _run(tmp_path / "b", FreezeUnfreeze(1), 3)
    multiplier = dict(zip(NAMES, plan["lr_mults"]))
    for epoch in (0, 1, 2):
        for (name, lr, _), (_, ref, _) in zip(auto.epochs[epoch]["lrs"], plain.epochs[epoch]["lrs"]):
            factor = multiplier[name.split(".")[0]] if epoch >= 1 else 1.0
            assert lr == pytest.approx(ref * factor, rel=1e-6), (epoch, name)
    assert any(m != 1.0 for m in plan["lr_mults"])  # the comparison above is not vacuous


@pytest.mark.parametrize("stop_after", [1, 2], ids=["before-decision", "after-decision"])
def test_resume_is_exact_and_does_not_measure_again(tmp_path, stop_after, caplog):
    full, full_rec, full_state = _run(tmp_path / "a", AutoFreeze(), 3)
    _run(tmp_path / "b", AutoFreeze(), 3, stop_after=stop_after)
    checkpoint = tmp_path / "b" / f"epoch={stop_after - 1}.ckpt"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed, res_rec, res_state = _run(tmp_path / "c", AutoFreeze(), 3, ckpt_path=checkpoint)
    measured = [r for r in caplog.records if r.getMessage().startswith("AutoFreeze:")]
    assert len(measured) == (1 if stop_after == 1 else 0)
    assert res_state["policy_state"] == full_state["policy_state"]
    assert res_rec.epochs[2] == full_rec.epochs[2]  # trainable set, modes and LRs (multiplied once)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_any_lightning_module_gets_the_mask_and_a_warning_about_rates(tmp_path):
    """PlainModule's SGD holds every parameter in one param group: the multipliers cannot apply to it."""
    callback = LayerFreezing(AutoFreeze(all_groups_at=2))  # every group trains, at different rates
    model = PlainModule()
    with pytest.warns(UserWarning, match="several layer groups"):
        trainer(tmp_path, 2, [callback]).fit(model, loader(fixed_data()))
    plan = callback.policy.plan
    assert plan is not None and plan.mask[-1] and callback.trainable_mask == list(plan.mask)
    trainable = [any(p.requires_grad for p in g.params) for g in callback.groups]
    assert trainable == list(plan.mask)


class DictBatches(PlainModule):
    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch["x"]), batch["y"])


class Stream(IterableDataset):
    def __iter__(self):
        return iter(fixed_data())


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (DictBatches, [{"x": x, "y": y} for x, y in fixed_data()], r"batches of the form \(inputs, targets, \.\.\.\)"),
        (PlainModule, Stream(), r"needs a map-style dataset .* Stream"),
    ],
    ids=["dict-batches", "iterable-dataset"],
)
def test_data_it_cannot_measure_on_is_a_clear_error(tmp_path, model, data, match):
    """An iterable dataset is refused before the first step; a batch that is not a tuple at the decision."""
    steps = Recorder()
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, 2, [LayerFreezing("auto"), steps]).fit(model(), DataLoader(data, batch_size=8))
    assert list(steps.epochs) == ([] if isinstance(data, Stream) else [0])


# --------------------------------------------------------------------------------------------------------- DDP
class WritePlan(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        freezing = next(c for c in trainer.callbacks if isinstance(c, LayerFreezing))
        plan = freezing.policy.plan.to_dict()
        lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
        (self.out / f"plan{trainer.global_rank}.json").write_text(json.dumps({"plan": plan, "lrs": lrs}))


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_ranks_follow_one_plan_and_stay_identical(tmp_path):
    torch.manual_seed(0)
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    callbacks = [LayerFreezing(AutoFreeze()), GatherParams(str(tmp_path / "diff.json")), WritePlan(tmp_path)]
    t = trainer(tmp_path, 3, callbacks, devices=2, strategy="ddp_spawn", enable_checkpointing=False)
    t.fit(model, loader(fixed_data(n=32), batch_size=4))
    result = json.loads((tmp_path / "diff.json").read_text())
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}
    plans = [json.loads((tmp_path / f"plan{rank}.json").read_text()) for rank in (0, 1)]
    assert plans[0] == plans[1]
    assert plans[0]["plan"]["mask"].count(True) >= 2


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_resume_after_the_decision_keeps_the_plan_and_the_replicas_identical(tmp_path):
    """Resumed past the decision, DDP wraps the probe's set: the restored plan must reach it, without a new measure."""

    def run(root: Path, epochs: int, ckpt_path: Path | None = None) -> dict:
        torch.manual_seed(0)
        model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
        root.mkdir(parents=True, exist_ok=True)
        every_epoch = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        callbacks = [LayerFreezing(AutoFreeze()), GatherParams(str(root / "diff.json")), WritePlan(root), every_epoch]
        t = trainer(root, epochs, callbacks, devices=2, strategy="ddp_spawn")
        t.fit(
            model, loader(fixed_data(n=32), batch_size=4), ckpt_path=ckpt_path, weights_only=True if ckpt_path else None
        )
        return json.loads((root / "diff.json").read_text())

    run(tmp_path / "a", 2)
    result = run(tmp_path / "b", 3, ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}
    first, resumed = (json.loads((tmp_path / d / "plan0.json").read_text()) for d in ("a", "b"))
    assert resumed["plan"] == first["plan"]


# --------------------------------------------------------------------------------------------------------- CLI
def _lit_transfer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).parent / "lit-transfer"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_recipe_decides_once_and_a_resume_follows_the_plan(tmp_path):
    """`lit-transfer fit` with recipes/auto.yaml, then `--ckpt_path last` past the decision: no second measurement."""
    args = [
        *("--config", str(RECIPES / "defaults.yaml"), "--config", str(RECIPES / "auto.yaml")),
        *TINY,
        *("--data.image_size=32", "--data.batch_size=8", "--model.freeze.probe_epochs=1"),
        f"--trainer.default_root_dir={tmp_path}",
    ]
    first = _lit_transfer(tmp_path, "fit", *args, "--trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    decisions = [line for line in (first.stdout + first.stderr).splitlines() if line.startswith("AutoFreeze:")]
    assert len(decisions) == 1 and "from epoch 1 train" in decisions[0]
    resumed = _lit_transfer(tmp_path, "fit", *args, "--trainer.max_epochs=3", "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "AutoFreeze:" not in resumed.stdout + resumed.stderr
    plans = []
    for version in ("version_0", "version_1"):
        state = torch.load(tmp_path / "lightning_logs" / version / "checkpoints" / "last.ckpt", weights_only=True)
        plans.append(next(v for k, v in state["callbacks"].items() if k.startswith("LayerFreezing"))["policy_state"])
    assert plans[0] == plans[1] and plans[0]["plan"]["epoch"] == 1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"layer_decay": 0.8}, "`layer_decay` (0.8)"), ({"frozen_lr_mult": 0.1}, "`frozen_lr_mult` (0.1)")],
)
def test_auto_refuses_a_stacked_model_decay(kwargs, named):
    """AutoFreeze owns every group's LR multiplier: a model-level decay would stack under its logged plan."""
    with pytest.raises(ValueError, match=rf"`freeze: auto` sets each layer group's learning rate.*{re.escape(named)}"):
        TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="auto", **kwargs)
    TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="freeze_unfreeze", **kwargs)
