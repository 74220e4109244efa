"""Frozen-feature caching: the same training as without the cache, with the backbone run once per sample."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from callback_helpers import StopAfter
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from lit_transfer import TransferClassifier
from lit_transfer.callbacks import BatchSizeRamp
from lit_transfer.callbacks.feature_cache import CachedFeatures, FeatureCache


def probe(cache: bool, backbone: str = "test_resnet", **kwargs):
    torch.manual_seed(0)
    return TransferClassifier(
        backbone, num_classes=3, pretrained=False, freeze="linear_probe", cache_features=cache, **kwargs
    )


class ShuffledData(L.LightningDataModule):
    """Training data shuffled as a function of (seed, epoch), so a resumed run sees the same order; unshuffled
    validation data; the batch size is read at every (re)load."""

    def __init__(self, batch_size: int = 8, size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train = fixed_data(n=40, size=size, seed=1)
        self.val = fixed_data(n=12, size=size, seed=2)

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(self.train, num_replicas=world, rank=rank, shuffle=True, seed=0)
        return DataLoader(self.train, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=5)


class Watch(L.Callback):
    """Counts backbone calls per epoch and records each training batch's shape and first label."""

    def __init__(self, model: TransferClassifier) -> None:
        self.calls = 0
        self.per_epoch: list[int] = []
        self.batches: list[tuple] = []
        self.val_losses: list[float] = []
        model.backbone.layer1.register_forward_hook(self.count)

    def count(self, *args) -> None:
        self.calls += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((tuple(batch[0].shape), batch[1].tolist()))

    def on_validation_epoch_end(self, trainer, pl_module):
        self.val_losses.append(float(trainer.callback_metrics["val_loss"]))

    def on_train_epoch_end(self, trainer, pl_module):
        self.per_epoch.append(self.calls)


def _fit(tmp_path: Path, cache: bool, epochs: int = 3, **trainer_kwargs) -> tuple[TransferClassifier, Watch]:
    model = probe(cache)
    watch = Watch(model)
    torch.manual_seed(1)
    trainer(tmp_path, epochs, [watch], **trainer_kwargs).fit(model, datamodule=ShuffledData())
    return model, watch


def test_cached_probe_trains_exactly_like_the_uncached_one_and_runs_the_backbone_once(tmp_path):
    plain, plain_watch = _fit(tmp_path / "plain", cache=False, num_sanity_val_steps=2)
    cached, cached_watch = _fit(tmp_path / "cached", cache=True, num_sanity_val_steps=2)
    # Same batches, same order (the cache keeps the loader's shuffling), but features instead of images.
    assert [labels for _, labels in cached_watch.batches] == [labels for _, labels in plain_watch.batches]
    assert {shape[1:] for shape, _ in plain_watch.batches} == {(3, 16, 16)}
    assert {len(shape) for shape, _ in cached_watch.batches} == {2}
    # Bit-identical head and validation losses; the frozen backbone is untouched in both.
    for name, value in plain.state_dict().items():
        assert torch.equal(value, cached.state_dict()[name]), name
    assert cached_watch.val_losses == plain_watch.val_losses
    # The backbone ran once per sample: 5 train + 3 val batches, all before the first epoch ended.
    assert cached_watch.per_epoch == [8, 8, 8]
    assert plain_watch.per_epoch[-1] - plain_watch.per_epoch[-2] == 5 + 3


def test_computing_the_cache_shows_a_progress_bar_when_the_trainer_shows_one(tmp_path, capfd):
    _fit(tmp_path / "bar", cache=True, epochs=1, enable_progress_bar=True)
    shown = capfd.readouterr().err
    assert "FeatureCache: train features:" in shown and "FeatureCache: validation features:" in shown
    _fit(tmp_path / "quiet", cache=True, epochs=1, enable_progress_bar=False)
    assert "FeatureCache" not in capfd.readouterr().err


def test_cache_is_not_used_outside_fit(tmp_path):
    model, _ = _fit(tmp_path, cache=True, epochs=1)
    assert getattr(model, "feature_cache", None) is None  # freed at the end of `fit`
    data = ShuffledData()
    results = trainer(tmp_path, 1).validate(model, dataloaders=data.val_dataloader(), verbose=False)
    assert 0.0 <= results[0]["val_acc"] <= 1.0


def test_cached_probe_resumes_to_the_same_weights(tmp_path):
    uninterrupted, _ = _fit(tmp_path / "full", cache=True, epochs=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = probe(True)
    torch.manual_seed(1)
    trainer(tmp_path / "a", 4, [checkpoint, StopAfter(epochs=2)]).fit(first, datamodule=ShuffledData())
    resumed = probe(True)
    watch = Watch(resumed)
    torch.manual_seed(1)
    trainer(tmp_path / "b", 4, [watch]).fit(
        resumed, datamodule=ShuffledData(), ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=10.ckpt")
    )
    assert watch.per_epoch == [8, 8]  # the features are computed again once, in the first resumed epoch
    for name, value in uninterrupted.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


def test_cache_survives_reloaded_loaders_of_a_batch_size_ramp(tmp_path):
    runs = {}
    for cache in (False, True):
        model = probe(cache)
        watch = Watch(model)
        torch.manual_seed(1)
        trainer(
            tmp_path / str(cache),
            3,
            [watch, BatchSizeRamp(milestones={1: 2.0})],
            reload_dataloaders_every_n_epochs=1,
        ).fit(model, datamodule=ShuffledData(batch_size=4))
        runs[cache] = (model, watch)
    (plain, plain_watch), (cached, cached_watch) = runs[False], runs[True]
    assert [shape[0] for shape, _ in cached_watch.batches] == [shape[0] for shape, _ in plain_watch.batches]
    assert {shape[0] for shape, _ in cached_watch.batches} == {4, 8}
    assert cached_watch.per_epoch == [13, 13, 13]  # 10 train + 3 val batches once; reloads reuse the features
    for name, value in plain.state_dict().items():
        assert torch.equal(value, cached.state_dict()[name]), name


class Stream(IterableDataset):
    def __iter__(self):
        yield from fixed_data(n=8)


def test_cache_refuses_an_iterable_dataset_naming_the_setting(tmp_path):
    model = probe(True, warmup_epochs=0)  # a stream has no epochs to warm up over: the run is sized by max_steps
    with pytest.raises(ValueError, match=r"map-style train dataset.*Stream.*cache_features: false"):
        trainer(tmp_path, 1, max_steps=4).fit(model, DataLoader(Stream(), batch_size=4))


def test_cached_features_serve_a_batch_in_one_indexing():
    data = CachedFeatures(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 0, 1]))
    features, labels = data.__getitems__([4, 1])
    assert features.tolist() == [[8.0, 9.0], [2.0, 3.0]] and labels.tolist() == [1, 1]
    assert len(DataLoader(data, batch_size=2)) == 3


def test_cache_refused_for_a_trainable_backbone():
    with pytest.raises(ValueError, match="linear_probe"):
        TransferClassifier(
            "test_resnet", num_classes=3, pretrained=False, freeze="freeze_unfreeze", cache_features=True
        )


class BatchShapes(L.Callback):
    """Records the shape of each training batch's inputs."""

    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.shapes.append(tuple(batch[0].shape))


@pytest.mark.parametrize("backbone", ["test_convnext", "mobilenetv3_small_050"])
def test_a_head_with_layers_of_its_own_trains_on_cached_forward_features(tmp_path, backbone):
    """ConvNeXt's head norm and MobileNetV3's conv_head train in a linear probe: the cache holds what comes before."""
    runs = {}
    for cache in (False, True):
        torch.manual_seed(0)
        model = TransferClassifier(
            backbone, num_classes=3, pretrained=False, freeze="linear_probe", cache_features=cache, drop_rate=0.2
        )
        record = BatchShapes()
        train, val = fixed_data(n=24, size=32, seed=1), fixed_data(n=8, size=32, seed=2)
        torch.manual_seed(1)
        trainer(tmp_path / str(cache), 2, [record]).fit(model, loader(train, batch_size=8), loader(val, batch_size=4))
        runs[cache] = (model, record.shapes)
    plain, cached = runs[False][0], runs[True][0]
    assert {len(shape) for shape in runs[True][1]} == {4} and runs[True][1] != runs[False][1]  # features, not images
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, cached.state_dict()[name], rtol=1e-5, atol=1e-6, msg=name)
    results = quiet_trainer_validate(tmp_path, cached, loader(fixed_data(n=8, size=32, seed=2), batch_size=4))
    assert 0.0 <= results["val_acc"] <= 1.0  # validate after the fit sees images again


def quiet_trainer_validate(tmp_path: Path, model: TransferClassifier, data: DataLoader) -> dict:
    return trainer(tmp_path / "validate", 1).validate(model, dataloaders=data, verbose=False)[0]


def test_cache_refused_with_mixup():
    with pytest.raises(ValueError, match="mixup"):
        probe(True, mixup_alpha=0.2)


class AugmentingData(L.LightningDataModule):
    train_transform = "light"

    def train_dataloader(self):
        return loader(fixed_data())


def test_cache_refused_when_the_datamodule_augments(tmp_path):
    with pytest.raises(ValueError, match=r"train_transform: 'light'.*train_transform: none"):
        trainer(tmp_path, 1).fit(probe(True), datamodule=AugmentingData())


def test_cache_with_the_digits_datamodule_matches_the_uncached_probe(tmp_path):
    from lit_transfer.data import DigitsDataModule

    weights = {}
    for cache in (False, True):
        data = DigitsDataModule(
            classes=[0, 1, 2], shots_per_class=8, batch_size=8, image_size=16, train_transform="none"
        )
        model = probe(cache)
        watch = Watch(model)
        torch.manual_seed(1)
        trainer(tmp_path / str(cache), 3, [watch]).fit(model, datamodule=data)
        weights[cache] = model.state_dict()
        if cache:
            assert watch.per_epoch[0] == watch.per_epoch[-1]  # nothing after the first epoch
    for name, value in weights[False].items():
        assert torch.equal(value, weights[True][name]), name
    with pytest.raises(ValueError, match="train_transform"):
        augmented = DigitsDataModule(classes=[0, 1, 2], shots_per_class=8, train_transform="light")
        trainer(tmp_path, 1).fit(probe(True), datamodule=augmented)


class FeatureProbe(L.LightningModule):
    """Not a TransferClassifier: a frozen torch backbone, a linear head, the cache added by `configure_callbacks`."""

    def __init__(self, cache: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(4, 3)
        self.cache = cache
        self.backbone_calls = 0
        self.backbone.register_forward_hook(self._count)

    def _count(self, *args) -> None:
        self.backbone_calls += 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x if x.ndim == 2 else self.features(x))  # cached features are 2-D, images 4-D

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)

    def configure_callbacks(self):
        return [FeatureCache(self.features)] if self.cache else []


def test_the_cache_callback_serves_any_module_that_adds_it(tmp_path):
    runs = {}
    for cache in (False, True):
        model = FeatureProbe(cache)
        torch.manual_seed(1)
        fit = trainer(tmp_path / str(cache), 3)
        fit.fit(model, datamodule=ShuffledData())
        runs[cache] = model, fit
    (plain, _), (cached, fit) = runs[False], runs[True]
    assert torch.equal(plain.head.weight, cached.head.weight) and torch.equal(plain.head.bias, cached.head.bias)
    assert cached.backbone_calls == 5 + 3  # each train and validation sample once (batches of 8 and of 5)
    assert plain.backbone_calls == 3 * (5 + 3)
    (callback,) = [c for c in fit.callbacks if isinstance(c, FeatureCache)]
    assert not callback._features  # freed at the end of `fit`
    fit.validate(cached, dataloaders=ShuffledData().val_dataloader(), verbose=False)
    assert cached.backbone_calls == 5 + 3 + 3  # outside `fit`: images again


# ------------------------------------------------------------------------------------------------------ DDP
class Final(L.Callback):
    """Rank 0 saves the final weights; every rank's weights are compared across ranks at each epoch end."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.spreads: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        self.spreads.append(float((gathered.max(0).values - gathered.min(0).values).abs().max()))

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save(dict(pl_module.state_dict()), self.out.with_suffix(".pt"))
            self.out.write_text(json.dumps(self.spreads))


def _ddp_fit(tmp_path: Path, cache: bool, backbone: str, size: int) -> tuple[list[float], dict]:
    out = tmp_path / f"cache{cache}.json"
    trainer(tmp_path / str(cache), 3, [Final(out)], devices=2, strategy="ddp_spawn", num_sanity_val_steps=0).fit(
        probe(cache, backbone), datamodule=ShuffledData(batch_size=4, size=size)
    )
    return json.loads(out.read_text()), torch.load(out.with_suffix(".pt"), weights_only=True)


@pytest.mark.ddp
@pytest.mark.slow  # over ~15 s on 2 cores
@pytest.mark.parametrize(("backbone", "size"), [("test_resnet", 16), ("test_convnext", 32)])  # pre-logit, trunk
def test_cached_probe_under_ddp_matches_the_uncached_one(tmp_path, backbone, size):
    plain_spreads, plain = _ddp_fit(tmp_path, cache=False, backbone=backbone, size=size)
    cached_spreads, cached = _ddp_fit(tmp_path, cache=True, backbone=backbone, size=size)
    assert plain_spreads == cached_spreads == [0.0, 0.0, 0.0]  # replicas identical after every epoch
    for name, value in plain.items():
        assert torch.allclose(value, cached[name], atol=1e-6), name
