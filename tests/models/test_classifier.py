import copy
import json
import math
import pickle
import re
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from freeze_helpers import Recorder, fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

from lit_transfer import FreezeUnfreeze, TransferClassifier
from lit_transfer.errors import CheckpointMismatchError, CorruptFileError


def make(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("pretrained", False)
    return TransferClassifier("test_resnet", num_classes=kwargs.pop("num_classes", 3), **kwargs)


def test_fit_logs_metrics_and_named_lr_columns(tmp_path):
    model = make(num_classes=6, freeze=FreezeUnfreeze(1), layer_decay=0.7)
    data = fixed_data(n=24, classes=6)
    logger = CSVLogger(tmp_path)
    t = trainer(tmp_path, 2, [LearningRateMonitor("step")], logger=logger, log_every_n_steps=1)
    t.fit(model, loader(data), loader(data))
    metrics = t.callback_metrics
    for name in ("train_loss", "val_loss", "val_acc", "val_f1", "val_acc_top5", "train_acc"):
        assert name in metrics, name
    header = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    lr_columns = {c for c in header if c.startswith("lr-")}
    expected = {f"lr-AdamW/{g['name']}" for g in t.optimizers[0].param_groups}
    assert lr_columns == expected
    assert "lr-AdamW/head" in lr_columns and "lr-AdamW/stem" in lr_columns


class EpochAccuracy(Callback):
    """Per epoch: the accuracy of every training logit the model produced, and the `train_acc` it logged."""

    def __init__(self, model: TransferClassifier) -> None:
        self.correct, self.seen, self.pairs = 0, 0, []
        self.labels = None
        model.backbone.register_forward_hook(self.count)

    def count(self, module, args, logits):
        if module.training:
            self.correct += int((logits.argmax(-1) == self.labels).sum())
            self.seen += len(self.labels)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.labels = batch[1]

    def on_train_epoch_end(self, trainer, pl_module):
        self.pairs.append((self.correct / self.seen, float(trainer.callback_metrics["train_acc"])))
        self.correct, self.seen = 0, 0


def test_train_metrics_cover_every_batch_of_each_epoch(tmp_path):
    model = make(freeze="full_fine_tune", optimizer=partial(torch.optim.SGD, lr=0.5))
    watch = EpochAccuracy(model)
    trainer(tmp_path, 3, [watch]).fit(model, loader(fixed_data(n=30, classes=3), batch_size=4))
    assert len({round(expected, 6) for expected, _ in watch.pairs}) > 1  # the accuracy changes between epochs
    for expected, logged in watch.pairs:
        assert logged == pytest.approx(expected, abs=1e-6)


def test_layer_decay_and_frozen_lr_mult_in_group_lrs(tmp_path):
    model = make(
        freeze="freeze_unfreeze", layer_decay=0.5, frozen_lr_mult=0.1, optimizer=partial(torch.optim.SGD, lr=1.0)
    )
    recorder = Recorder()
    trainer(tmp_path, 1, [recorder]).fit(model, loader(fixed_data()))
    lrs = {name: lr for name, lr, _ in recorder.epochs[0]["lrs"]}
    # the default schedule starts its warmup at 0.01 of the base LR; the per-group ratios are what matter
    assert lrs["head"] == pytest.approx(0.01)
    assert lrs["layer4"] / lrs["head"] == pytest.approx(0.5 * 0.1)
    assert lrs["stem"] / lrs["head"] == pytest.approx(0.5**5 * 0.1)


def _decay(epoch):
    return 0.9**epoch


SCHEDULERS = {
    "step": (partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), lambda e: 0.5**e),
    "cosine": (
        partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4),
        lambda e: (1 + math.cos(math.pi * e / 4)) / 2,
    ),
    "lambda": (partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=_decay), lambda e: 0.9**e),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_keep_working_across_the_unfreeze(tmp_path, name):
    factory, closed_form = SCHEDULERS[name]
    model = make(
        freeze=FreezeUnfreeze(unfreeze_at_epoch=2),
        layer_decay=0.5,
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=factory,
    )
    recorder = Recorder()
    trainer(tmp_path, 4, [recorder]).fit(model, loader(fixed_data()))
    for epoch in range(4):
        lrs = recorder.epochs[epoch]["lrs"]
        assert len(lrs) == len(recorder.epochs[0]["lrs"])
        for group_name, lr, _ in lrs:
            scale = _scales(model)[group_name]
            assert lr == pytest.approx(0.1 * scale * closed_form(epoch), rel=1e-6), (epoch, group_name)


def _scales(model):
    from lit_transfer.freezing.layer_groups import layer_groups
    from lit_transfer.optim.param_groups import layer_decay_scales

    groups = layer_groups(model.backbone)
    scales = layer_decay_scales(len(groups), model.hparams.layer_decay)
    out = {}
    for g, s in zip(groups, scales):
        out[g.name] = s
        out[f"{g.name}.no_decay"] = s
    return out


def test_one_cycle_per_step_across_the_unfreeze(tmp_path):
    data = fixed_data(n=32)
    steps = 4 * 4
    model = make(
        freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=steps),
        scheduler_interval="step",
    )
    t = trainer(tmp_path, 4)
    t.fit(model, loader(data))
    scheduler = t.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == steps
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    expected = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=steps)
    for _ in range(steps):
        reference.step()
        expected.step()
    assert all(g["lr"] == pytest.approx(reference.param_groups[0]["lr"]) for g in t.optimizers[0].param_groups)


def test_predict_returns_classes_and_probabilities(tmp_path):
    model = make()
    x = fixed_data(n=8).tensors[0]
    out = trainer(tmp_path, 1).predict(model, loader(torch.utils.data.TensorDataset(x)))
    batch = out[0]
    assert batch["preds"].shape == (8,) and batch["probs"].shape == (8, 3)
    assert torch.allclose(batch["probs"].sum(-1), torch.ones(8))
    assert torch.equal(batch["probs"].argmax(-1), batch["preds"])


def test_checkpoint_reloads_without_arguments_and_safely(tmp_path):
    model = make(class_names=["a", "b", "c"], freeze="linear_probe")
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data()))
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    payload = torch.load(path, weights_only=True)  # plain contents only
    assert payload["hyper_parameters"]["freeze"] == {"policy": "linear_probe", "train_bn": False}
    loaded = TransferClassifier.load_from_checkpoint(path)
    assert loaded.class_names == ["a", "b", "c"]
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_of_other_head_is_refused_with_package_error(tmp_path):
    model = make()
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data()))
    t.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"5 classes.*fc\.weight"):
        TransferClassifier.load_from_checkpoint(tmp_path / "m.ckpt", num_classes=5)


@pytest.mark.parametrize("cut", ["empty", "cut short", "random bytes"])
def test_a_broken_checkpoint_is_named_with_what_is_wrong(tmp_path, cut):
    model = make()
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data()))
    path = tmp_path / "last.ckpt"
    t.save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "cut short": data[: len(data) // 2], "random bytes": bytes(range(256)) * 8}[cut])
    with pytest.raises(CorruptFileError, match=r"checkpoint '.*last\.ckpt' .*Load another checkpoint of the run"):
        TransferClassifier.load_from_checkpoint(path)


def test_checkpoint_as_backbone_weights_for_a_new_task(tmp_path):
    model = make()
    t = trainer(tmp_path, 1)
    t.fit(model, loader(fixed_data()))
    t.save_checkpoint(tmp_path / "m.ckpt")
    new = TransferClassifier("test_resnet", num_classes=7, pretrained=str(tmp_path / "m.ckpt"))
    assert torch.equal(new.backbone.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)
    assert new.backbone.fc.out_features == 7


def test_channels_last_and_compile_keep_plain_checkpoint_keys(tmp_path):
    model = make(channels_last=True)
    assert model.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    compiled = make(compile=True)
    keys = set(compiled.state_dict())
    assert not any("_orig_mod" in k for k in keys)
    assert keys == set(make().state_dict())


@pytest.mark.slow  # two CPU compilations
def test_a_copy_of_a_compiled_model_runs_its_own_backbone() -> None:
    """The compiled forward is bound to the backbone it compiled: a deep copy or a pickle compiles its own."""
    model = make(compile=True).eval()
    images = torch.randn(2, 3, 32, 32)
    before = model(images)
    copied = copy.deepcopy(model)
    with torch.no_grad():
        copied.backbone.fc.weight.zero_()
        copied.backbone.fc.bias.fill_(1.0)
        assert torch.equal(copied(images), torch.ones(2, 3))
        assert torch.equal(model(images), before)
    assert "_compiled_forward" not in pickle.loads(pickle.dumps(model)).__dict__


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"class_names": ["a"]}, "class_names"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"mixup_alpha": -1.0}, "mixup_alpha"),
        ({"freeze": "gradual"}, "Unknown freezing policy"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def _digits(classes, **kwargs):
    from lit_transfer.data import DigitsDataModule

    return DigitsDataModule(classes=classes, shots_per_class=2, image_size=16, batch_size=8, **kwargs)


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_datamodule_with_another_class_count_is_refused_at_setup(tmp_path, stage):
    dm = _digits([0, 1, 2, 3, 4])
    run = getattr(trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=1), stage)
    with pytest.raises(
        ValueError,
        match=r"DigitsDataModule\) has 5 classes but the model was built with `num_classes=3`.*"
        r"`num_classes=datamodule\.num_classes`",
    ):
        run(make(num_classes=3), datamodule=dm)


def test_class_names_of_another_order_are_refused_and_warned_at_predict(tmp_path):
    dm = _digits([3, 5, 7])
    model = make(class_names=["5", "3", "7"])
    with pytest.raises(ValueError, match=r"`class_names` \['5', '3', '7'\] differ.*\['3', '5', '7'\].*another order"):
        trainer(tmp_path, 1, limit_train_batches=1).fit(model, datamodule=dm)
    with pytest.warns(UserWarning, match=r"another order.*Predictions are named with the model's classes"):
        trainer(tmp_path, 1, limit_predict_batches=1).predict(model, datamodule=dm)
    renamed = make(class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match=r"differ from the DataModule's.*class_names=datamodule\.class_names"):
        trainer(tmp_path, 1, limit_val_batches=1).validate(renamed, datamodule=dm)
    matching = make(class_names=["3", "5", "7"])  # the same names in the same order train as before
    trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=1).fit(matching, datamodule=dm)
    assert matching.data_config["input_size"] == [3, 16, 16]


# -------------------------------------------------------------------------------- data checks and records
class _DeclaredData(L.LightningDataModule):
    """A DataModule that says whether it augments through `augments_training`, whatever its `train_transform`."""

    def __init__(self, augments: bool, train_transform: str | None = None) -> None:
        super().__init__()
        self.augments_training = augments
        if train_transform is not None:
            self.train_transform = train_transform

    def train_dataloader(self):
        return loader(fixed_data())


def _probe():
    return make(freeze="linear_probe", cache_features=True)


def test_cache_features_asks_the_datamodule_whether_it_augments(tmp_path):
    with pytest.raises(ValueError, match=r"\(_DeclaredData\) augments .*\(`augments_training` is True\)"):
        trainer(tmp_path, 1).fit(_probe(), datamodule=_DeclaredData(True))
    # the DataModule's own answer wins over a `train_transform` that means something else to it
    trainer(tmp_path, 1, limit_train_batches=1).fit(_probe(), datamodule=_DeclaredData(False, "custom"))
    with pytest.raises(ValueError, match=r"`train_transform: 'custom'`.*`train_transform: none`"):
        trainer(tmp_path, 1).fit(_probe(), datamodule=_DeclaredData(True, "custom"))


def test_checkpoint_keeps_its_format_plus_the_reseeding_seed(tmp_path):
    dm = _digits([3, 5, 7])
    model = make(class_names=["3", "5", "7"])
    t = trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=1)
    t.fit(model, datamodule=dm)
    t.save_checkpoint(tmp_path / "m.ckpt")
    payload = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert payload["data_config"] == model.data_config and payload["data_config"]["input_size"] == [3, 16, 16]
    assert type(payload["rng_seed"]) is int
    loaded = TransferClassifier.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.data_config == model.data_config and loaded.preprocessing.source == "checkpoint"


# -------------------------------------------------------------------------------------------------- DDP
class CatchWarnings(Callback):
    """Records every warning of a (spawned) rank from `setup` to `teardown` into `<out>.<rank>.json`."""

    def __init__(self, out: str) -> None:
        self.out = out
        self._catcher: warnings.catch_warnings | None = None
        self._caught: list = []

    def setup(self, trainer, pl_module, stage):
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")

    def teardown(self, trainer, pl_module, stage):
        messages = [str(w.message) for w in self._caught]
        self._catcher.__exit__(None, None, None)
        Path(f"{self.out}.{trainer.global_rank}.json").write_text(json.dumps(messages))


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_fit_and_test_log_without_sync_dist_warnings(tmp_path):
    model = make(freeze="full_fine_tune", num_classes=6)  # no LayerFreezing: only the classifier's own logs
    data = fixed_data(n=32, classes=6)
    out = str(tmp_path / "warnings")
    t = trainer(tmp_path, 2, [CatchWarnings(out)], devices=2, strategy="ddp_spawn", limit_train_batches=2)
    t.fit(model, loader(data, batch_size=4), loader(data, batch_size=4))
    messages = [m for rank in (0, 1) for m in json.loads(Path(f"{out}.{rank}.json").read_text())]
    assert messages, "the warnings of the spawned ranks were not recorded"
    unsynced = re.findall(r"self\.log\('([^']+)', \.\.\., sync_dist=True\)", "\n".join(messages))
    assert unsynced == [], unsynced
