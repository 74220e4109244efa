"""HeadProbe (``probe_views``): the classifier fitted to augmented views' features before the first step."""

from __future__ import annotations

import copy
import json
import logging
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from callback_helpers import StopAfter
from freeze_helpers import trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from quiet import tiny_images
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler

from lit_transfer import TransferClassifier, TransferRegressor
from lit_transfer.callbacks.head_probe import MAX_WEIGHT_GROUPS, fit_linear_head
from lit_transfer.data import DigitsDataModule
from lit_transfer.data.samplers import BalancedSampler
from lit_transfer.models.frozen_features import frozen_features


def _digits() -> DigitsDataModule:
    """Augmented training images (the digits' default pipeline), unaugmented validation images."""
    return DigitsDataModule(classes=[0, 1, 2], shots_per_class=8, batch_size=8, image_size=16, num_workers=0)


def _model(views: int, freeze: str = "freeze_unfreeze") -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze=freeze, probe_views=views)


class FirstStep(L.Callback):
    """At the first training step: the validation loss of the weights then, the global RNG and the batch."""

    def __init__(self) -> None:
        self.val_loss: float | None = None
        self.rng: torch.Tensor | None = None
        self.batch: torch.Tensor | None = None
        self.head: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self.rng is None:
            self.rng = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.val_loss is not None:
            return
        self.batch = batch[0].clone()
        self.head = pl_module.backbone.get_classifier().weight.detach().clone()
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            losses = [
                nn.functional.cross_entropy(pl_module(x), y, reduction="sum")
                for x, y in trainer.datamodule.val_dataloader()
            ]
        pl_module.train(was_training)
        self.val_loss = float(sum(losses)) / len(trainer.datamodule.val_dataset)


def _first_step(tmp_path: Path, views: int) -> FirstStep:
    watch = FirstStep()
    torch.manual_seed(1)
    trainer(tmp_path / str(views), 1, [watch], limit_train_batches=1, limit_val_batches=0).fit(
        _model(views), datamodule=_digits()
    )
    return watch


def test_the_run_starts_from_the_fitted_head_and_draws_what_it_would_without_it(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fresh = _first_step(tmp_path, views=0)
        probed = _first_step(tmp_path, views=3)
        one_view = _first_step(tmp_path, views=1)
    assert probed.val_loss < 0.8 * fresh.val_loss  # the same backbone, a classifier fitted to its features
    assert torch.equal(probed.rng, fresh.rng)  # the global generators as without the probe
    assert torch.equal(probed.batch, fresh.batch)  # the same images, augmented alike
    assert not torch.allclose(probed.head, one_view.head, atol=1e-3)  # the views differ: three copies of one would not
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("HeadProbe:"))
    assert "72 features (3 view(s) of 24 training samples)" in line


def test_the_fitted_layer_is_the_minimum_of_the_penalised_loss():
    """On real features (digits through a random test_resnet): the objective's gradient vanishes at the solution."""
    data = _digits()
    data.setup("fit")
    torch.manual_seed(0)
    backbone = _model(0).backbone
    images, labels = next(iter(data.train_dataloader()))
    features = frozen_features(backbone, images)
    loss = nn.functional.cross_entropy
    layer, before, after = fit_linear_head(features, labels, 3, loss, l2=1e-2, max_iter=200)
    layer.requires_grad_(True)
    objective = loss(layer(features), labels) + 0.5 * 1e-2 * layer.weight.pow(2).sum()
    gradient = torch.autograd.grad(objective, list(layer.parameters()))
    assert after < before
    assert max(float(g.abs().max()) for g in gradient) < 1e-4
    stronger, _, _ = fit_linear_head(features, labels, 3, loss, l2=1.0, max_iter=200)
    assert stronger.weight.norm() < layer.weight.norm()  # the penalty acts


def test_a_resumed_fit_keeps_the_checkpoints_head_and_ends_where_the_uninterrupted_one_does(tmp_path):
    torch.manual_seed(1)
    uninterrupted = _model(2)
    trainer(tmp_path / "full", 3).fit(uninterrupted, datamodule=_digits())
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    torch.manual_seed(1)
    trainer(tmp_path / "a", 3, [checkpoint, StopAfter(epochs=1)]).fit(_model(2), datamodule=_digits())
    [saved] = (tmp_path / "ckpt").glob("epoch=0-*.ckpt")
    resumed = _model(2)
    torch.manual_seed(1)
    trainer(tmp_path / "b", 3).fit(resumed, datamodule=_digits(), ckpt_path=str(saved))
    for name, value in uninterrupted.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


class SigtermAtTrainStart(L.Callback):
    """A Trainer callback: its ``on_train_start`` runs before the model's HeadProbe, and sends SIGTERM there."""

    def on_train_start(self, trainer, pl_module):
        signal.raise_signal(signal.SIGTERM)


def test_sigterm_during_the_probe_stops_the_fit_after_one_batch_of_features(tmp_path):
    model = _model(3)  # 3 views of 24 samples, batch 8: 9 batches of features
    initial_head = model.backbone.get_classifier().weight.detach().clone()
    forwards = []
    model.backbone.conv1.register_forward_hook(lambda module, args, output: forwards.append(len(args[0])))
    fit = trainer(tmp_path, 2, [SigtermAtTrainStart()])
    with pytest.raises(SIGTERMException):
        fit.fit(model, datamodule=_digits())
    assert forwards == [8]  # the first batch of the first view, then the stop
    assert fit.global_step == 0 and not list(tmp_path.rglob("*.ckpt"))  # nothing trained, nothing to resume
    assert torch.equal(model.backbone.get_classifier().weight, initial_head)  # not half-fitted
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Lightning's handler gone with the fit


class HeadAtFirstStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.head = copy.deepcopy(pl_module.backbone.get_classifier())


def test_sample_weights_count_like_repeated_samples():
    """Weight 2 on a sample is the same objective as that sample twice; the weights' scale does not matter."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 5, generator=generator)
    labels = torch.tensor([0, 1, 2] * 4)
    twice = torch.tensor([0, 1, 5, 6])
    weights = torch.ones(12).index_fill(0, twice, 2.0)
    fit = {"out_features": 3, "loss": nn.functional.cross_entropy, "l2": 1e-2, "max_iter": 200}
    weighted, before, after = fit_linear_head(features, labels, sample_weights=3 * weights, **fit)
    repeated, _, _ = fit_linear_head(torch.cat([features, features[twice]]), torch.cat([labels, labels[twice]]), **fit)
    unweighted, _, _ = fit_linear_head(features, labels, **fit)
    assert after < before
    assert torch.allclose(weighted.weight, repeated.weight, atol=2e-3)  # L-BFGS stops at float32 tolerances
    assert torch.allclose(weighted.bias, repeated.bias, atol=2e-3)
    assert not torch.allclose(weighted.weight, unweighted.weight, atol=0.1)


PER_CLASS = {0: 8, 1: 4, 2: 1}
"""Training samples of each class in the imbalanced set (of the digits' 8 per class)."""


class ImbalancedDigits(L.LightningDataModule):
    """:data:`PER_CLASS` unaugmented digits, drawn class-balanced by a :class:`BalancedSampler` or by torch's
    ``WeightedRandomSampler`` (which Lightning wraps under DDP), each sample weighted ``1 / count(class)``."""

    def __init__(self, sampler: str = "balanced") -> None:
        super().__init__()
        self.sampler = sampler

    def setup(self, stage: str) -> None:
        digits = _digits()
        digits.setup("fit")
        by_class = {c: [j for j, (_, y) in enumerate(digits.train_dataset) if y == c] for c in PER_CLASS}
        self.subset = Subset(digits.train_dataset, [i for c, n in PER_CLASS.items() for i in by_class[c][:n]])
        self.labels = [int(self.subset[i][1]) for i in range(len(self.subset))]

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "balanced":
            return DataLoader(self.subset, batch_size=8, sampler=BalancedSampler(self.subset, self.labels))
        weights = [1 / PER_CLASS[y] for y in self.labels]
        return DataLoader(self.subset, batch_size=8, sampler=WeightedRandomSampler(weights, len(weights)))


def _features_and_labels(backbone: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen features of :class:`ImbalancedDigits`' training set by ``backbone``, and its labels."""
    data = ImbalancedDigits()
    data.setup("fit")
    images = torch.stack([data.subset[i][0] for i in range(len(data.subset))])
    return frozen_features(backbone, images), torch.tensor(data.labels)


def test_a_balanced_sampler_fits_the_head_to_the_classes_it_draws_equally(tmp_path, caplog):
    model = _model(1)
    backbone = copy.deepcopy(model.backbone)
    watch = HeadAtFirstStep()
    with caplog.at_level(logging.INFO):
        trainer(tmp_path, 1, [watch], limit_train_batches=1).fit(model, datamodule=ImbalancedDigits())
    features, targets = _features_and_labels(backbone)
    labels = targets.tolist()
    class_weights = torch.tensor([1 / PER_CLASS[y] for y in labels])
    loss = nn.functional.cross_entropy
    plain, _, _ = fit_linear_head(features, targets, 3, loss, l2=1e-3, max_iter=100)

    def objective(head: nn.Linear, weights: torch.Tensor) -> float:
        losses = loss(head(features), targets, reduction="none")
        return float((weights * losses).sum() / weights.sum() + 0.5e-3 * head.weight.pow(2).sum())

    with torch.no_grad():  # each head is the better one for the distribution it was fitted to
        assert objective(watch.head, class_weights) < objective(plain, class_weights) - 0.01
        assert objective(plain, torch.ones(13)) < objective(watch.head, torch.ones(13)) - 0.01
    assert any("13 training samples, weighted as the sampler draws them" in r.getMessage() for r in caplog.records)


def test_a_sampler_with_too_many_distinct_weights_is_refused_before_the_feature_pass(tmp_path):
    images = tiny_images(n=MAX_WEIGHT_GROUPS + 1, size=8)
    weights = torch.arange(1.0, MAX_WEIGHT_GROUPS + 2)
    loader = DataLoader(images, batch_size=64, sampler=WeightedRandomSampler(weights, num_samples=64))
    model = _model(1)
    forwards = []
    model.backbone.conv1.register_forward_hook(lambda module, args, output: forwards.append(1))
    with pytest.raises(ValueError, match=r"weights take 1001 distinct values.*Set `probe_views: 0`"):
        trainer(tmp_path, 1, limit_train_batches=1).fit(model, train_dataloaders=loader)
    assert not forwards


@pytest.mark.parametrize("bar", [True, False])
def test_the_feature_pass_shows_a_progress_bar_when_the_trainer_shows_one(tmp_path, capfd, bar):
    fit = trainer(tmp_path, 1, enable_progress_bar=bar, limit_train_batches=1, limit_val_batches=0)
    fit.fit(_model(2), datamodule=_digits())
    shown = capfd.readouterr().err
    for view in (1, 2):
        assert (f"HeadProbe: features of view {view}/2:" in shown) is bar
    assert ("| 0/3 [" in shown) is bar  # 24 samples in batches of 8


class Brightness(L.LightningDataModule):
    """Regression: the target is the image's mean brightness, which a random backbone's features still carry."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(32, 3, 16, 16, generator=generator) * torch.rand(32, 1, 1, 1, generator=generator)
        self.targets = self.images.mean(dim=(1, 2, 3)).unsqueeze(1) * 10

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.targets), batch_size=8)


class FirstLoss(L.Callback):
    def __init__(self) -> None:
        self.loss: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.loss is None:
            with torch.no_grad():
                data = trainer.datamodule
                self.loss = float(pl_module.loss(pl_module.eval()(data.images), data.targets, "val"))
            pl_module.train()


def test_a_regressor_starts_from_a_fitted_head_on_its_own_loss(tmp_path):
    losses = {}
    for views in (0, 1):
        torch.manual_seed(0)
        model = TransferRegressor("test_resnet", num_outputs=1, pretrained=False, probe_views=views)
        watch = FirstLoss()
        trainer(tmp_path / str(views), 1, [watch], limit_train_batches=1, limit_val_batches=0).fit(
            model, datamodule=Brightness()
        )
        losses[views] = watch.loss
    assert losses[1] < 0.5 * losses[0]


@pytest.mark.parametrize("views", [-1, 1.5, True])
def test_probe_views_must_be_a_count(views):
    with pytest.raises(ValueError, match=r"`probe_views` must be an integer >= 0"):
        _model(views)


def test_a_head_that_is_not_one_linear_layer_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"`probe_views`.*'levit_128s'.*not one linear layer. Set `probe_views: 0`"):
        TransferClassifier("levit_128s", num_classes=3, pretrained=False, probe_views=2)


class Spread(L.Callback):
    """Rank 0 writes the largest difference between the replicas' classifiers at the first step."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx or trainer.current_epoch:
            return
        head = pl_module.backbone.get_classifier()
        flat = torch.cat([head.weight.reshape(-1), head.bias])
        gathered = trainer.strategy.all_gather(flat)
        if trainer.is_global_zero:
            spread = float((gathered.max(0).values - gathered.min(0).values).abs().max())
            self.out.write_text(json.dumps({"spread": spread, "norm": float(flat.norm()), "head": flat.tolist()}))


@pytest.mark.ddp
@pytest.mark.slow  # over ~15 s on 2 cores
def test_replicas_start_from_the_same_fitted_head_under_ddp(tmp_path):
    out = tmp_path / "spread.json"
    torch.manual_seed(1)
    trainer(tmp_path, 1, [Spread(out)], devices=2, strategy="ddp_spawn", limit_train_batches=1).fit(
        _model(2), datamodule=_digits()
    )
    result = json.loads(out.read_text())
    assert result["spread"] == 0.0 and result["norm"] > 0.0  # fitted (zero-initialised, then moved) and identical


@pytest.mark.ddp
@pytest.mark.slow  # over ~15 s on 2 cores
@pytest.mark.parametrize("sampler", ["balanced", "weighted_random"])
def test_under_ddp_a_weighted_sampler_weights_the_head_as_in_one_process(tmp_path, sampler):
    """Each rank draws a share of the sampler's draws (Lightning wraps torch's sampler for DDP); every rank's head is
    still fitted to the distribution the sampler draws from, as in one process."""
    single = HeadAtFirstStep()
    trainer(tmp_path / "one", 1, [single], limit_train_batches=1).fit(_model(1), datamodule=ImbalancedDigits(sampler))
    out = tmp_path / "spread.json"
    model = _model(1)
    backbone = copy.deepcopy(model.backbone)
    trainer(tmp_path / "ddp", 1, [Spread(out)], devices=2, strategy="ddp_spawn", limit_train_batches=1).fit(
        model, datamodule=ImbalancedDigits(sampler)
    )
    result = json.loads(out.read_text())
    head = torch.tensor(result["head"])
    expected = torch.cat([single.head.weight.reshape(-1), single.head.bias])
    features, targets = _features_and_labels(backbone)
    plain, _, _ = fit_linear_head(features, targets, 3, nn.functional.cross_entropy, l2=1e-3, max_iter=100)
    unweighted = torch.cat([plain.weight.reshape(-1), plain.bias])
    assert result["spread"] == 0.0
    assert torch.allclose(head, expected, atol=2e-3)  # L-BFGS stops at float32 tolerances
    assert not torch.allclose(head, unweighted, atol=0.05)


def test_several_training_loaders_are_refused_naming_the_setting(tmp_path):
    data = TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,)))
    loaders = {"a": DataLoader(data, batch_size=4), "b": DataLoader(data, batch_size=4)}
    with pytest.raises(ValueError, match=r"`probe_views` needs the training data as one torch `DataLoader`, got dict"):
        trainer(tmp_path, 1, limit_val_batches=0).fit(_model(1), train_dataloaders=loaders)
