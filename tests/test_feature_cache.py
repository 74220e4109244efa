import lightning as L
import pytest
import torch
from freeze_helpers import fixed_data, loader, trainer

from lit_transfer import TransferClassifier


def probe(cache: bool, **kwargs):
    torch.manual_seed(0)
    return TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, freeze="linear_probe", cache_features=cache, **kwargs
    )


class CountCalls:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_cached_probe_matches_uncached_and_skips_the_backbone_after_epoch_one(tmp_path):
    data = fixed_data(n=32)
    plain = probe(False)
    trainer(tmp_path / "a", 3).fit(plain, loader(data))
    cached = probe(True)
    counter = CountCalls(cached.backbone.layer1)
    per_epoch = []

    class EpochCalls(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            per_epoch.append(counter.calls)

    trainer(tmp_path / "b", 3, [EpochCalls()]).fit(cached, loader(data))
    assert per_epoch == [4, 4, 4]  # 4 batches in epoch 0, none after
    assert cached.feature_cache.hits == 64 and cached.feature_cache.misses == 32
    for name in ("backbone.fc.weight", "backbone.fc.bias"):
        assert torch.allclose(plain.state_dict()[name], cached.state_dict()[name], atol=1e-5), name
    for name, value in plain.state_dict().items():
        if not name.startswith("backbone.fc"):
            assert torch.equal(value, cached.state_dict()[name]), name


def test_cache_refused_for_a_trainable_backbone():
    with pytest.raises(ValueError, match="linear_probe"):
        TransferClassifier(
            "test_resnet", num_classes=3, pretrained=False, freeze="freeze_unfreeze", cache_features=True
        )


def test_cache_refused_when_the_head_holds_a_norm():
    with pytest.raises(ValueError, match="final norm"):
        TransferClassifier("test_convnext", num_classes=3, pretrained=False, freeze="linear_probe", cache_features=True)


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


def test_cache_with_the_digits_datamodule(tmp_path):
    from lit_transfer.data import DigitsDataModule

    data = DigitsDataModule(classes=[0, 1, 2], shots_per_class=8, batch_size=8, image_size=16, train_transform="none")
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, freeze="linear_probe", cache_features=True
    )
    trainer(tmp_path, 3).fit(model, datamodule=data)
    assert model.feature_cache.misses == 24 + len(data.val_dataset)
    assert model.feature_cache.hits == 2 * (24 + len(data.val_dataset))
    with pytest.raises(ValueError, match="train_transform"):
        augmented = DigitsDataModule(classes=[0, 1, 2], shots_per_class=8, train_transform="light")
        trainer(tmp_path, 1).fit(model, datamodule=augmented)
