"""The five fine-tuning recipes of the peers benchmark (:mod:`benchmarks.peers`), each as its own documentation shows.

Every recipe trains on the quick start's task (``recipes/quickstart.yaml``: 10-shot digits 5-9, batch 16, the
recipe's digit-safe augmentation) from the same source weights (:func:`benchmarks.common.source_weights`, saved
without a head), reads its batches from the same :class:`~lit_transfer.data.DigitsDataModule` loaders (the
backbone's timm normalisation, the recipe's augmentation, an order and augmentation seeded per (seed, epoch)),
validates after every epoch on the same validation split and is tested with its final weights on the fixed test
split. What differs is only what each library's documentation shows for a fine-tune:

- :func:`plain_timm`: ``timm.create_model(pretrained=True, pretrained_cfg_overlay={"file": ...})``, timm's
  ``create_optimizer_v2("adamw")`` and ``create_scheduler_v2("cosine")`` (stepped per epoch), a plain PyTorch loop;
  everything trains from the first step.
- :func:`lightning_backbone_finetuning`: a minimal LightningModule (``backbone`` + ``head``, its optimizer on the
  head) with Lightning's ``BackboneFinetuning`` callback at its defaults (backbone frozen until epoch 10, then at
  a tenth of the head's LR growing x1.5 per epoch up to it).
- :func:`fastai_fine_tune`: ``vision_learner`` on the timm name (fastai's head, its ``default_split``, Adam with its
  defaults) and ``Learner.fine_tune`` (one frozen epoch, then every layer with discriminative LRs).
- :func:`lit_transfer_recipe`: ``recipes/defaults.yaml`` + ``recipes/quickstart.yaml`` through the ``lit-transfer``
  CLI machinery (:class:`~lit_transfer.cli.app.TransferCLI`), optionally with ``--model.freeze=auto``.

Each returns a :class:`Curve`: the wall time from the recipe's first line (building data and model included) to
the end of every epoch's validation, the validation accuracy then, and the final test accuracy.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import common

QUICKSTART = "quickstart.yaml"


@dataclass
class Setting:
    """One run's inputs: the source weights, the few-shot draw and training seed, the learning rate and epochs."""

    weights: Path
    seed: int
    lr: float
    epochs: int


@dataclass
class Curve:
    """One run's measurements.

    Attributes:
        seconds: Wall time from the recipe's start to the end of each epoch's validation.
        val_acc: Validation accuracy (%) after each epoch.
        test_acc: Test accuracy (%) of the final weights.
    """

    seconds: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    test_acc: float = float("nan")


class Clock:
    """Wall time since construction; :meth:`mark` records it with one epoch's validation accuracy."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.curve = Curve()

    def mark(self, val_acc: float) -> None:
        """Record the end of an epoch (``val_acc`` in %)."""
        self.curve.seconds.append(time.perf_counter() - self.start)
        self.curve.val_acc.append(float(val_acc))


# --------------------------------------------------------------------------------------------- shared data
def recipe() -> dict[str, Any]:
    """``recipes/quickstart.yaml`` as a dict (the shipped copy)."""
    import yaml

    from lit_transfer.demo.source_model import RECIPES

    return dict(yaml.safe_load((RECIPES / QUICKSTART).read_text()))


def datamodule(seed: int) -> Any:
    """The quick start recipe's DigitsDataModule (classes, shots, batch, augmentation) for ``seed``, set up.

    The normalisation is the backbone's timm data config, as the CLI links it into the recipe's DataModule.
    """
    from lit_transfer.backbones import backbone_data_config
    from lit_transfer.data import DigitsDataModule

    settings = dict(recipe()["data"]["init_args"])
    settings["seed"] = seed
    data = DigitsDataModule(**settings, data_config=backbone_data_config(common.BACKBONE))
    data.setup("fit")
    data.setup("test")
    return data


def weight_decay() -> float:
    """The quick start recipe's AdamW weight decay (the plain timm loop and the Lightning peer use it too)."""
    return float(recipe()["model"]["init_args"]["optimizer"]["init_args"]["weight_decay"])


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Any]) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode over ``(images, labels)`` batches; the mode is restored."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for images, labels in batches:
        correct += int((model(images).argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


# ------------------------------------------------------------------------------------------------ 1. timm
def plain_timm(setting: Setting) -> Curve:
    """A full fine-tune in a plain PyTorch loop with timm's model, optimizer and scheduler factories."""
    import timm
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    clock = Clock()
    torch.manual_seed(setting.seed)
    data = datamodule(setting.seed)
    model = timm.create_model(
        common.BACKBONE,
        pretrained=True,
        num_classes=data.num_classes,
        pretrained_cfg_overlay={"file": str(setting.weights)},
    )
    optimizer = create_optimizer_v2(model, opt="adamw", lr=setting.lr, weight_decay=weight_decay())
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=setting.epochs)
    loss_fn = nn.CrossEntropyLoss()
    train_loader = data.train_dataloader()
    for epoch in range(setting.epochs):
        train_loader.sampler.set_epoch(epoch)  # the order and augmentation of this epoch
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
        scheduler.step(epoch + 1)
        clock.mark(accuracy(model, data.val_dataloader()))
    clock.curve.test_acc = accuracy(model, data.test_dataloader())
    return clock.curve


# ------------------------------------------------------------------------------------------- 2. Lightning
def _val_clock(clock: Clock) -> Any:
    """A callback marking ``clock`` at every training epoch end with the logged ``val_acc`` (validated just before)."""
    from lightning.pytorch.callbacks import Callback

    class ValClock(Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            clock.mark(100.0 * float(trainer.callback_metrics["val_acc"]))

    return ValClock()


def _backbone_module(weights: Path, num_classes: int, lr: float, decay: float) -> Any:
    """The minimal LightningModule of ``BackboneFinetuning``'s documented example, with a timm backbone."""
    import lightning as L
    import timm
    from torchmetrics.classification import MulticlassAccuracy

    class TransferLearningModel(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            # the callback needs a `backbone` attribute; timm's model without its classifier (num_classes=0)
            self.backbone = timm.create_model(
                common.BACKBONE, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(weights)}
            )
            self.head = nn.Linear(self.backbone.num_features, num_classes)  # type: ignore[arg-type]
            self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            images, labels = batch
            return nn.functional.cross_entropy(self(images), labels)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            images, labels = batch
            self.val_acc(self(images), labels)
            self.log("val_acc", self.val_acc, on_epoch=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            # the head only: the callback adds the backbone's parameter group when it unfreezes it
            return torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=decay)

    return TransferLearningModel()


def lightning_backbone_finetuning(setting: Setting) -> Curve:
    """Lightning's ``BackboneFinetuning`` at its defaults on a minimal LightningModule with a timm backbone."""
    import lightning as L
    from lightning.pytorch.callbacks import BackboneFinetuning

    clock = Clock()
    L.seed_everything(setting.seed, verbose=False)
    data = datamodule(setting.seed)
    model = _backbone_module(setting.weights, data.num_classes, setting.lr, weight_decay())
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=setting.epochs,
        callbacks=[BackboneFinetuning(), _val_clock(clock)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    clock.curve.test_acc = accuracy(model, data.test_dataloader())
    return clock.curve


# ---------------------------------------------------------------------------------------------- 3. fastai
def fastai_available() -> str | None:
    """``None`` when fastai imports, else why not (the benchmark skips its row with this reason)."""
    try:
        import fastai.vision.learner  # noqa: F401
    except ImportError as err:
        return f"fastai is not installed ({err}); `pip install lit-transfer[peers]` adds it"
    return None


def fastai_fine_tune(setting: Setting) -> Curve:
    """fastai's ``vision_learner`` on the timm name and ``Learner.fine_tune`` (1 frozen epoch + the rest unfrozen)."""
    import fastai.callback.progress  # adds Learner.no_bar
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fine_tune and fit_one_cycle)
    from fastai.callback.core import Callback as FastaiCallback
    from fastai.data.core import DataLoaders
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy as fastai_accuracy
    from fastai.vision.learner import vision_learner

    clock = Clock()
    torch.manual_seed(setting.seed)
    data = datamodule(setting.seed)
    train_loader = data.train_dataloader()
    epochs_seen = [0]

    class EpochHooks(FastaiCallback):  # type: ignore[misc]
        order = 60  # after the Recorder (50), which holds the epoch's validation metrics

        def before_epoch(self) -> None:  # fine_tune fits twice; the loader's epoch counts on across both
            train_loader.sampler.set_epoch(epochs_seen[0])

        def after_epoch(self) -> None:
            epochs_seen[0] += 1
            clock.mark(100.0 * float(self.learn.recorder.values[-1][-1]))

    # batches come normalised with the backbone's mean/std from the DataModule: fastai adds no Normalize
    dls = DataLoaders(train_loader, data.val_dataloader())
    learn = vision_learner(
        dls,
        common.BACKBONE,
        n_out=data.num_classes,
        pretrained=True,
        normalize=False,
        loss_func=CrossEntropyLossFlat(),
        metrics=fastai_accuracy,
        cbs=[EpochHooks()],
        pretrained_cfg_overlay={"file": str(setting.weights)},
    )
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(setting.epochs - 1, base_lr=setting.lr, freeze_epochs=1)
    clock.curve.test_acc = accuracy(learn.model, data.test_dataloader())
    return clock.curve


# ---------------------------------------------------------------------------------------- 4./5. lit_transfer
def lit_transfer_recipe(setting: Setting, overrides: tuple[str, ...] = ()) -> Curve:
    """``recipes/defaults.yaml`` + ``recipes/quickstart.yaml`` (+ ``overrides``) through the CLI machinery."""
    from lit_transfer.cli import TransferCLI
    from lit_transfer.demo.source_model import QUIET_ARGS, RECIPES

    clock = Clock()
    with tempfile.TemporaryDirectory() as root:
        args = [
            "--config",
            str(RECIPES / "defaults.yaml"),
            "--config",
            str(RECIPES / QUICKSTART),
            f"--model.pretrained={setting.weights}",
            f"--model.optimizer.init_args.lr={setting.lr}",
            f"--data.seed={setting.seed}",
            f"--seed_everything={setting.seed}",
            f"--trainer.max_epochs={setting.epochs}",
            f"--trainer.default_root_dir={root}",
            "--trainer.accelerator=cpu",
            *QUIET_ARGS,
            *overrides,
        ]
        cli = TransferCLI(args=args, run=False)
        cli.trainer.callbacks.append(_val_clock(clock))  # type: ignore[attr-defined]
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    clock.curve.test_acc = 100.0 * float(metrics["test_acc"])
    return clock.curve


def lit_transfer_auto(setting: Setting) -> Curve:
    """The quick start recipe with ``freeze: auto`` (which sets each group's learning rate itself: no layer decay)."""
    return lit_transfer_recipe(setting, ("--model.freeze=auto", "--model.layer_decay=null"))
