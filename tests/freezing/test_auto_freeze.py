"""AutoFreeze: linear probe, trial fine-tunes scored on validation, a plan that trains, resumes and agrees in DDP."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from callback_helpers import StopAfter
from cli_helpers import RECIPES, TINY
from freeze_helpers import GatherParams, PlainModule, Recorder, fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from quiet import quiet_trainer
from torch.utils.data import DataLoader, IterableDataset, Subset

from lit_transfer import AutoFreeze, LayerFreezing, TransferClassifier
from lit_transfer.data import DigitsDataModule
from lit_transfer.freezing import FreezeUnfreeze, resolve_policy
from lit_transfer.freezing.sandbox import TrialBench
from lit_transfer.freezing.trial_data import validation_set
from lit_transfer.freezing.trials import (
    Candidate,
    TrialResult,
    halving_cost,
    paired_standard_error,
    successive_halving,
)
from lit_transfer.optim.param_groups import layer_decay_scales
from lit_transfer.training_state import seeded_rng

NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def classifier(policy, **kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=policy, **kwargs)


# ------------------------------------------------------------------------------------------------ the decision
def result(name: str, loss: float, se: float = 0.0, steps: int = 4) -> TrialResult:
    return TrialResult(name, steps, loss, se)


def test_candidates_are_depths_from_the_head_with_layer_decay():
    candidates = AutoFreeze(depths=[0, 1, 2, "all", 99], layer_decay=0.5).candidates(NAMES)
    assert [c.name for c in candidates] == ["linear probe", "layer4 + head", "layer3.. + head", "all groups"]
    assert [sum(c.mask) for c in candidates] == [1, 2, 3, 6]  # 99 groups is every group: a duplicate, dropped
    assert all(list(c.mask) == sorted(c.mask) for c in candidates)  # the trained groups are those nearest the head
    assert candidates[-1].lr_mults == (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0)  # 0.5 ** steps below the head
    assert candidates[1].lr_mults == (1.0, 1.0, 1.0, 1.0, 0.5, 1.0)  # frozen groups keep 1


def test_successive_halving_keeps_the_best_and_gives_the_survivors_more_steps():
    gains = {"a": 0.01, "b": 0.05, "c": 0.03, "d": 0.02}
    trained: dict[str, int] = {}

    def run(candidate, steps):
        trained[candidate.name] = trained.get(candidate.name, 0) + steps
        return torch.full((8,), 1.0) - gains[candidate.name] * trained[candidate.name] + 0.01 * torch.arange(8)

    candidates = [Candidate(name, (True,), (1.0,)) for name in "abcd"]
    results = successive_halving(candidates, run, first_steps=2, halving=2)
    assert [(r.name, r.steps) for r in results] == [("b", 6), ("c", 6), ("d", 2), ("a", 2)]
    assert results[0].paired_se == 0.0 and all(r.val_loss > results[0].val_loss for r in results[1:])
    one_round = successive_halving(candidates, run, first_steps=3, halving=4)
    assert [r.steps for r in one_round] == [3, 3, 3, 3]


@pytest.mark.parametrize(("count", "halving"), [(1, 2), (3, 2), (3, 3), (5, 2), (9, 3), (10, 3)])
def test_the_trials_cost_is_what_successive_halving_trains(count, halving):
    def run(candidate, steps):  # a fixed ranking: the earlier candidate is always better
        return torch.full((4,), float(candidate.name))

    candidates = [Candidate(str(i), (True,), (1.0,)) for i in range(count)]
    results = successive_halving(candidates, run, first_steps=2, halving=halving)
    assert sum(r.steps for r in results) == 2 * halving_cost(count, halving)
    assert [r.name for r in results] == [str(i) for i in range(count)]  # survivors first, then by their last round


def test_paired_standard_error_is_that_of_the_per_sample_differences():
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 2.0, 2.0, 4.5])
    diff = (a - b).double()
    assert paired_standard_error(a, b) == pytest.approx(float(diff.std() / 2.0))
    assert paired_standard_error(a, a + 1.0) == 0.0  # a constant difference is no noise


def test_the_default_stays_unless_another_candidate_is_clearly_better():
    policy = AutoFreeze()
    clear = policy.choose(NAMES, [result("linear probe", 0.3), result("all groups", 0.9, se=0.1)], 8.0, 1, 40)
    assert clear.chosen == "linear probe" and clear.mask == (False,) * 5 + (True,)
    assert clear.reason.startswith("lowest validation loss, 6.0 se below the default")
    unclear = policy.choose(NAMES, [result("linear probe", 0.3), result("all groups", 0.35, se=0.1)], 8.0, 1, 40)
    assert unclear.chosen == "all groups" and unclear.mask == (True,) * 6
    assert unclear.reason.startswith("default: linear probe was not lower by more than 1 paired standard error")
    eager = AutoFreeze(min_advantage=0).choose(
        NAMES, [result("linear probe", 0.3), result("all groups", 0.35, 0.1)], 8, 1, 40
    )
    assert eager.chosen == "linear probe"
    best_is_default = policy.choose(NAMES, [result("all groups", 0.2), result("layer4 + head", 0.3, 0.01)], 8, 2, 40)
    assert best_is_default.chosen == "all groups" and best_is_default.epoch == 2
    # the very rates the model's own layer_decay=0.7 gives each group, not a rounding of them
    assert best_is_default.lr_mults == tuple(layer_decay_scales(len(NAMES), 0.7))
    line = best_is_default.describe(NAMES)
    assert line.startswith("AutoFreeze: 8 samples/class; validation loss on 40 samples: all groups 0.2 after 4 steps")
    assert "chose all groups (lowest validation loss): from epoch 2 train stem, layer1" in line


def test_without_evidence_the_stated_default_is_the_plan():
    plan = AutoFreeze(default=1).fallback(NAMES, 3.0, 1, "no validation data")
    assert plan.chosen == "layer4 + head" and plan.reason == "default: no validation data" and not plan.trials
    assert "no trials; chose layer4 + head (default: no validation data)" in plan.describe(NAMES)


def test_the_trials_fit_in_their_share_of_the_run_or_do_not_run():
    policy = AutoFreeze()  # a quarter of the steps left; three candidates, one round
    assert policy.affordable_steps(7, steps_left=200, candidates=3) == 7  # one epoch each fits
    assert policy.affordable_steps(20, steps_left=100, candidates=3) == 8  # 25 steps: 8 each
    reason = policy.affordable_steps(2, steps_left=14, candidates=3)
    assert reason == "the trials would train 12 steps, over max_trial_share=0.25 of the 14 training steps left"
    assert AutoFreeze(max_trial_share=None).affordable_steps(20, steps_left=4, candidates=3) == 20
    assert policy.affordable_steps(20, steps_left=None, candidates=3) == 20  # a run of unknown length
    halving = AutoFreeze(halving=2, trial_steps=10, max_trial_share=0.5)
    assert halving.affordable_steps(None, steps_left=70, candidates=3) == 5  # 3 x 5 + 2 x 10 = 35 of 70 steps
    assert AutoFreeze(trial_steps=2).affordable_steps(9, steps_left=24, candidates=3) == 2  # 6 of 24 steps


def test_the_probe_comes_first_and_the_plan_follows():
    policy = AutoFreeze(probe_epochs=2)
    assert policy.trainable_mask(1, 6) == [False] * 5 + [True]
    assert policy.awaits_plan(2) and not policy.awaits_plan(1)
    policy.choose(NAMES, [result("layer4 + head", 0.2), result("all groups", 0.9, se=0.1)], 1.0, 2, 30)
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
        ({"depths": []}, "depths"),
        ({"depths": [-1]}, "depths"),
        ({"depths": ["most"]}, "depths"),
        ({"default": "some"}, "default"),
        ({"trial_steps": 0}, "trial_steps"),
        ({"halving": 1}, "halving"),
        ({"max_val_samples": 0}, "max_val_samples"),
        ({"min_val_samples": 1}, "min_val_samples"),
        ({"min_advantage": -1}, "min_advantage"),
        ({"max_trial_share": 0}, "max_trial_share"),
        ({"max_trial_share": 1.5}, "max_trial_share"),
        ({"max_trial_share": "all"}, "max_trial_share"),
        ({"layer_decay": 0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
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


# ----------------------------------------------------------------------------------------------- the sandbox
def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


class BenchAtEpochOne(Callback):
    """Runs the trials by hand at the start of epoch 1 (as LayerFreezing does) and records what they touched."""

    def __init__(self, wrapped: bool) -> None:
        self.wrapped = wrapped
        self.checked = False

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != 1:
            return
        freezing = next(c for c in trainer.callbacks if isinstance(c, LayerFreezing))
        dataset = trainer.train_dataloader.dataset
        if self.wrapped:  # a user's loader over torch's Subset of the augmented dataset
            trainer.fit_loop._combined_loader.flattened[0] = DataLoader(Subset(dataset, range(len(dataset))), 8)
        optimizer = trainer.optimizers[0]
        params = {n: p.detach().clone() for n, p in pl_module.state_dict().items()}
        opt_state = copy.deepcopy(optimizer.state_dict())
        flags = [p.requires_grad for p in pl_module.parameters()]
        modes = [m.training for m in pl_module.modules()]
        grads = [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()]
        dataset.set_epoch(1)
        sample = dataset[5][0].clone()
        dataset.set_epoch(1)  # the next draw repeats it, unless something else draws from the pipeline
        torch.manual_seed(7)
        before = _rng_states()
        val = validation_set(trainer, max_samples=24, seed=0)
        candidates = freezing.policy.candidates([g.name for g in freezing.groups])
        with seeded_rng(0):
            bench = TrialBench(trainer, pl_module, freezing.groups, val, seed=0)
            first = [bench.run(c, 2) for c in candidates]
            bench.close()
        after = _rng_states()
        assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
        assert torch.equal(dataset[5][0], sample)  # the training pipeline's generator did not move
        for name, value in pl_module.state_dict().items():  # weights and BatchNorm statistics
            assert torch.equal(value, params[name]), name
        assert [p.requires_grad for p in pl_module.parameters()] == flags
        assert [m.training for m in pl_module.modules()] == modes
        now = [p.grad for p in pl_module.parameters()]
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, now))
        assert str(optimizer.state_dict()) == str(opt_state)
        assert len(first) == 3 and all(len(losses) == 24 for losses in first)
        assert not torch.equal(first[0], first[2])  # the candidates trained differently
        with seeded_rng(0):  # the same seed: the same batches, augmented alike, the same losses
            bench = TrialBench(trainer, pl_module, freezing.groups, val, seed=0)
            again = [bench.run(c, 2) for c in candidates]
            bench.close()
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        self.checked = True


@pytest.mark.parametrize("wrapped", [False, True], ids=["dataset", "subset"])
def test_the_trials_leave_weights_optimizer_generators_modes_flags_and_augmentations_as_they_were(tmp_path, wrapped):
    data = DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=8, train_transform="light", seed=3)
    check = BenchAtEpochOne(wrapped)
    policy = AutoFreeze(probe_epochs=5)  # decides after the check
    t = trainer(tmp_path, 2, [check], limit_train_batches=2, limit_val_batches=1)
    t.fit(classifier(policy), datamodule=data)
    assert check.checked


def _source_backbone(root: Path) -> dict[str, torch.Tensor]:
    """A ``test_resnet`` trained on digits 0-2: features that already separate the target's classes."""
    torch.manual_seed(0)
    source = TransferClassifier(
        "test_resnet",
        num_classes=3,
        pretrained=False,
        freeze="full_fine_tune",
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=3e-3),
    )
    data = DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=32, seed=0)
    quiet_trainer(root, max_epochs=4, limit_val_batches=0, enable_checkpointing=False).fit(source, datamodule=data)
    return {k: v for k, v in source.backbone.state_dict().items() if not k.startswith("fc.")}


@pytest.mark.slow
def test_the_data_decide_and_fine_tuning_that_hurts_keeps_the_linear_probe(tmp_path, caplog):
    """The same source and target: at a rate that wrecks pretrained features in a few steps, the probe stays; at a
    moderate rate on inverted scans (an input shift the source never saw), fine-tuning wins."""
    backbone = _source_backbone(tmp_path / "source")

    def decide(lr: float, inverted: bool) -> tuple[str, list[bool]]:
        model = classifier(AutoFreeze(max_trial_share=None), optimizer=lambda groups: torch.optim.AdamW(groups, lr=lr))
        model.backbone.load_state_dict(backbone, strict=False)
        kind = InvertedScans if inverted else DigitsDataModule
        data = kind(classes=[0, 1, 2], image_size=16, batch_size=8, shots_per_class=8, seed=0)
        t = trainer(tmp_path / f"{lr}-{inverted}", 2, limit_val_batches=0)  # the trials use the DataModule's split
        caplog.clear()
        with caplog.at_level(logging.INFO):
            t.fit(model, datamodule=data)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AutoFreeze:")]
        assert len(lines) == 1 and "validation loss on " in lines[0], lines
        freezing = next(c for c in t.callbacks if isinstance(c, LayerFreezing))
        return lines[0], freezing.trainable_mask

    line, mask = decide(lr=0.3, inverted=False)
    assert "chose linear probe (lowest validation loss" in line and mask == [False] * 5 + [True], line
    line, mask = decide(lr=3e-3, inverted=True)
    assert "chose linear probe" not in line and sum(mask) > 1, line


class InvertedScans(DigitsDataModule):
    """The digits with inverted intensity (``255 - v`` on every scan of every split)."""

    def _splits(self):
        images, digits, splits = super()._splits()
        return 255 - images, digits, splits


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
    data, val = fixed_data(n=24), fixed_data(n=24, seed=1)  # the trials score on the validation loader
    t = trainer(tmp_path, epochs, callbacks)
    t.fit(model, loader(data), loader(val), ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return model, recorder, probe.state


def test_probe_then_plan_with_rates_in_optimizer_and_schedule(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _, auto, state = _run(tmp_path / "a", AutoFreeze(depths=["all"], max_trial_share=None), 3)
    plan = state["policy_state"]["plan"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AutoFreeze:")]
    assert len(lines) == 1 and "samples/class; validation loss on 24 samples: all groups" in lines[0]
    assert "from epoch 1" in lines[0] and plan["trials"][0]["steps"] == 4
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


def test_the_trials_take_at_most_their_share_of_the_steps_left(tmp_path, caplog):
    with caplog.at_level(logging.INFO):  # 3 batches per epoch, 3 epochs: 6 left at the decision, a quarter is 1
        _, _, state = _run(tmp_path / "short", AutoFreeze(), 3)
    plan = state["policy_state"]["plan"]
    why = "the trials would train 12 steps, over max_trial_share=0.25 of the 6 training steps left"
    assert not plan["trials"] and plan["reason"] == f"default: {why}" and plan["chosen"] == "all groups"
    assert any(f"no trials; chose all groups (default: {why})" in r.getMessage() for r in caplog.records)
    _, _, state = _run(tmp_path / "long", AutoFreeze(trial_steps=10, max_trial_share=1.0), 5)  # 12 left: 4 each
    plan = state["policy_state"]["plan"]
    assert [t["steps"] for t in plan["trials"]] == [4, 4, 4] and plan["reason"] != "default: " + why


@pytest.mark.parametrize("stop_after", [1, 2], ids=["before-decision", "after-decision"])
def test_resume_is_exact_and_does_not_measure_again(tmp_path, stop_after, caplog):
    full, full_rec, full_state = _run(tmp_path / "a", AutoFreeze(max_trial_share=None), 3)
    _run(tmp_path / "b", AutoFreeze(max_trial_share=None), 3, stop_after=stop_after)
    checkpoint = tmp_path / "b" / f"epoch={stop_after - 1}.ckpt"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed, res_rec, res_state = _run(tmp_path / "c", AutoFreeze(max_trial_share=None), 3, ckpt_path=checkpoint)
    measured = [r for r in caplog.records if r.getMessage().startswith("AutoFreeze:")]
    assert len(measured) == (1 if stop_after == 1 else 0)
    assert res_state["policy_state"] == full_state["policy_state"]
    assert res_rec.epochs[2] == full_rec.epochs[2]  # trainable set, modes and LRs (multiplied once)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_any_lightning_module_gets_the_mask_and_a_warning_about_rates(tmp_path):
    """PlainModule's SGD holds every parameter in one param group: the multipliers cannot apply to it."""
    callback = LayerFreezing(AutoFreeze())  # no validation data: the default, every group at different rates
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

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.training_step(batch, batch_idx))


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
        batches = DataLoader(data, batch_size=8)
        trainer(tmp_path, 2, [LayerFreezing(AutoFreeze(max_trial_share=None)), steps]).fit(model(), batches, batches)
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
    callbacks = [
        LayerFreezing(AutoFreeze(max_trial_share=None)),
        GatherParams(str(tmp_path / "diff.json")),
        WritePlan(tmp_path),
    ]
    t = trainer(tmp_path, 3, callbacks, devices=2, strategy="ddp_spawn", enable_checkpointing=False)
    t.fit(model, loader(fixed_data(n=32), batch_size=4), loader(fixed_data(n=24, seed=1), batch_size=4))
    result = json.loads((tmp_path / "diff.json").read_text())
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}
    plans = [json.loads((tmp_path / f"plan{rank}.json").read_text()) for rank in (0, 1)]
    assert plans[0] == plans[1]  # rank 0 ran the trials (on every validation sample), rank 1 follows its plan
    assert len(plans[0]["plan"]["trials"]) == 3 and plans[0]["plan"]["val_samples"] == 24


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_resume_after_the_decision_keeps_the_plan_and_the_replicas_identical(tmp_path):
    """Resumed past the decision, DDP wraps the probe's set: the restored plan must reach it, without a new measure."""

    def run(root: Path, epochs: int, ckpt_path: Path | None = None) -> dict:
        torch.manual_seed(0)
        model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
        root.mkdir(parents=True, exist_ok=True)
        every_epoch = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        callbacks = [
            LayerFreezing(AutoFreeze(max_trial_share=None)),
            GatherParams(str(root / "diff.json")),
            WritePlan(root),
            every_epoch,
        ]
        t = trainer(root, epochs, callbacks, devices=2, strategy="ddp_spawn")
        train, val = loader(fixed_data(n=32), batch_size=4), loader(fixed_data(n=24, seed=1), batch_size=4)
        t.fit(model, train, val, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        return json.loads((root / "diff.json").read_text())

    run(tmp_path / "a", 2)
    result = run(tmp_path / "b", 3, ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}
    first, resumed = (json.loads((tmp_path / d / "plan0.json").read_text()) for d in ("a", "b"))
    assert resumed["plan"] == first["plan"] and first["plan"]["trials"]


# --------------------------------------------------------------------------------------------------------- CLI
def _lit_transfer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).parent / "lit-transfer"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_recipe_decides_once_and_a_resume_follows_the_plan(tmp_path):
    """`lit-transfer fit` with recipes/auto.yaml, then `--ckpt_path last` past the decision: no second trials."""
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
