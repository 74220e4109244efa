"""Shared DataModule logic: argument checks, transforms, samplers, loaders, batch-size state."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping
from typing import Any

import albumentations as A
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lit_transfer.data.pipeline import TransformArg
from lit_transfer.data.preprocessing import DataConfig, resolve_preprocessing
from lit_transfer.data.samplers import BalancedSampler, EpochSampler
from lit_transfer.data.transforms import build_eval_transform, build_train_transform, validate_train_transform
from lit_transfer.data.workers import seed_worker
from lit_transfer.errors import check_int


def default_num_workers() -> int:
    """``min(4, os.cpu_count())``: the default for file-based DataModules."""
    return min(4, os.cpu_count() or 1)


class BaseImageDataModule(LightningDataModule):
    """Loaders, transforms and sampling shared by every lit_transfer DataModule.

    Subclasses fill ``class_names`` in ``__init__`` and the ``*_dataset`` attributes in ``setup``. They declare
    only their own arguments and pass the others on with ``**kwargs``, so each argument below is declared and
    documented here once. The command line still lists every argument: LightningCLI (jsonargparse) follows
    ``super().__init__(**kwargs)`` to the parent's parameters, and ``inspect.signature(SubClass)`` gives the whole
    list too (the subclass's own parameters, then the ones ``**kwargs`` reaches, keyword-only).

    Args:
        batch_size: Samples per batch and device. A public attribute: a batch-size schedule may change it between
            epochs (with ``Trainer(reload_dataloaders_every_n_epochs=1)``); it is saved in :meth:`state_dict`.
        num_workers: DataLoader worker processes; ``None`` picks the subclass default: ``min(4, os.cpu_count())``
            for the file-based modules, 0 for the in-memory digits.
        seed: Seed of the training order, the augmentations and (where applicable) the splits.
        train_transform: A preset (``none | light | medium | heavy``), a pipeline (list of ``class_path`` entries,
            ``A.to_dict`` mapping, Albumentations object) or a path to a YAML/JSON file holding one.
        data_config: The backbone's timm data config (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``); ``None`` or missing keys use timm's defaults.
        image_size: Square input size overriding ``data_config['input_size']``.
        in_chans: Channels the model expects: 3 (RGB) or 1 (grayscale). Images are decoded to this count.
        balanced_sampling: Draw training samples class-balanced (with replacement) instead of shuffling.
        persistent_workers: Keep workers alive between epochs (only when ``num_workers > 0``).
        pin_memory: Pin batches; ``None`` pins when CUDA is available.
        drop_last: Drop the last incomplete training batch. Without it, a last batch of a single image is still
            dropped (BatchNorm cannot train on one image), with a message.
    """

    _default_workers: int | None = None  # None → default_num_workers()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `inspect.signature(cls)` reads `__signature__` first: the full argument list, `**kwargs` expanded
        setattr(cls, "__signature__", _expanded_signature(cls))  # noqa: B010 (mypy: not a declared attribute)

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 42,
        train_transform: TransformArg | None = "light",
        data_config: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        balanced_sampling: bool = False,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, minimum=1, expected="a positive int")
        if num_workers is not None:
            check_int("num_workers", num_workers, minimum=0, expected="a non-negative int or None")
        if in_chans not in (1, 3):
            raise ValueError(f"`in_chans` must be 1 or 3, got {in_chans!r}.")
        validate_train_transform(train_transform)
        self.batch_size = batch_size
        self.num_workers = num_workers if num_workers is not None else self._resolve_default_workers()
        self.seed = int(seed)
        self.train_transform = train_transform
        self.data_config = dict(data_config) if data_config is not None else None
        self.image_size = image_size
        self.in_chans = in_chans
        self.balanced_sampling = bool(balanced_sampling)
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.drop_last = bool(drop_last)
        self.resolved_config: DataConfig = resolve_preprocessing(self.data_config, image_size, in_chans)
        self.class_names: list[str] = []
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    def _resolve_default_workers(self) -> int:
        return default_num_workers() if self._default_workers is None else self._default_workers

    @property
    def num_classes(self) -> int:
        """Number of classes, available right after ``__init__``."""
        return len(self.class_names)

    @property
    def augments_training(self) -> bool:
        """Whether training images are augmented: ``train_transform`` is neither ``None`` nor ``"none"``.

        A model that caches features of its training images needs the same input every epoch, i.e. ``False`` here.

        Example:
            >>> from lit_transfer.data import DigitsDataModule
            >>> DigitsDataModule().augments_training, DigitsDataModule(train_transform="light").augments_training
            (False, True)
        """
        return self.train_transform not in (None, "none")

    def build_train_transform(self) -> A.Compose:
        """A fresh training pipeline for this module's data config (``A.Compose``)."""
        return build_train_transform(self.train_transform, self.resolved_config)

    def build_eval_transform(self) -> A.Compose:
        """A fresh evaluation pipeline for this module's data config (``A.Compose``)."""
        return build_eval_transform(self.resolved_config)

    # ----------------------------------------------------------------------------------------- loaders
    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return None, None

    def train_sampler(self) -> EpochSampler:
        """The training sampler: seeded shuffle, or class-balanced when ``balanced_sampling`` is on.

        Both are ``DistributedSampler`` subclasses, so Lightning keeps them under DDP (with either value of
        ``use_distributed_sampler``) and calls their ``set_epoch``.
        """
        dataset = self._require(self.train_dataset, "train")
        rank, world = self._rank_world()
        if self.balanced_sampling:
            labels = getattr(dataset, "labels", None)
            if labels is None:
                raise ValueError("`balanced_sampling=True` needs a labelled training set.")
            return BalancedSampler(dataset, labels, seed=self.seed, num_replicas=world, rank=rank)
        return EpochSampler(dataset, seed=self.seed, shuffle=True, num_replicas=world, rank=rank, drop_last=False)

    def _require(self, dataset: Dataset | None, split: str) -> Dataset:
        if dataset is None and self.trainer is not None:  # set up by the Trainer, and still no such split
            raise ValueError(
                f"{type(self).__name__} has no {split} split. {self._split_hint(split)}"
                + (" Or evaluate on the validation split with `validate`." if split == "test" else "")
            )
        if dataset is None:
            raise RuntimeError(f"The {split} dataset is not set up: call `setup()` first (the Trainer does this).")
        return dataset

    def _split_hint(self, split: str) -> str:
        """Where this DataModule reads the ``split`` from (overridden by the file-based modules)."""
        return f"Set up a {split} split."

    def _loader(self, dataset: Dataset, sampler: EpochSampler | None, drop_last: bool = False) -> DataLoader:
        rank, _ = self._rank_world()
        workers = self.num_workers
        generator = sampler.loader_generator if sampler is not None else torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False if sampler is None else None,
            num_workers=workers,
            worker_init_fn=functools.partial(seed_worker, rank=rank or 0),
            generator=generator,
            persistent_workers=self.persistent_workers and workers > 0,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        """Training loader with the epoch-seeded sampler and the current ``batch_size``.

        A last batch of a single image is dropped (:meth:`drops_single_image`): BatchNorm cannot train on it.
        """
        sampler = self.train_sampler()
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        drop_last = self.drop_last or self.drops_single_image(len(sampler))
        return self._loader(self._require(self.train_dataset, "train"), sampler, drop_last=drop_last)

    def drops_single_image(self, per_epoch: int) -> bool:
        """Whether the training loader drops its last batch because it would hold one image (said once).

        A BatchNorm layer in training mode cannot normalise a batch of one ("Expected more than 1 value per
        channel"), so a training set of ``k * batch_size + 1`` images (per process) would fail at the first epoch
        whose BatchNorm layers train. That one image is left out of the epoch instead; the order is reshuffled every
        epoch, so it is a different image each time.

        Args:
            per_epoch: Training samples per epoch and process (the sampler's length).

        Example:
            >>> from lit_transfer.data import DigitsDataModule
            >>> data = DigitsDataModule(batch_size=8)
            >>> data.drops_single_image(17), data.drops_single_image(16), data.drops_single_image(1)
            (True, False, False)
        """
        if self.drop_last or per_epoch <= 1 or per_epoch % self.batch_size != 1:
            return False
        noted = (per_epoch, self.batch_size)
        if getattr(self, "_noted_single", None) != noted:
            self._noted_single = noted
            rank_zero_info(
                f"{type(self).__name__}: {per_epoch} training images per epoch make {per_epoch // self.batch_size}"
                f" batch(es) of {self.batch_size} and one of a single image, which BatchNorm cannot train on: that"
                " image is left out of each epoch (a different one every epoch). Pass `drop_last: true` to say so,"
                " or a `batch_size` that leaves no single image."
            )
        return True

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader in dataset order; an empty list when there is no validation split."""
        return [] if self.val_dataset is None else self._loader(self.val_dataset, None)

    def test_dataloader(self) -> DataLoader:
        """Test loader in dataset order."""
        return self._loader(self._require(self.test_dataset, "test"), None)

    def predict_dataloader(self) -> DataLoader:
        """Predict loader in dataset order; batches are ``(images, indices)`` into ``predict_paths``."""
        return self._loader(self._require(self.predict_dataset, "predict"), None)

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The current ``batch_size``, so a resumed run continues with a ramped size."""
        return {"batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``batch_size`` from :meth:`state_dict` when a ``fit`` resumes.

        ``validate``, ``test`` and ``predict`` with a checkpoint keep the batch size they were given: the checkpoint's
        is the training run's, and an evaluation's batch size does not change its results.
        """
        trainer = self.trainer
        if trainer is not None and trainer.state.fn != TrainerFn.FITTING:
            return
        if "batch_size" in state_dict:
            self.batch_size = int(state_dict["batch_size"])


def _expanded_signature(cls: type) -> inspect.Signature:
    """The signature of ``cls(...)``, a ``**kwargs`` of ``__init__`` replaced by the parent's parameters.

    ``__init__`` passes ``**kwargs`` on to the parent's ``__init__``: the parent's parameters follow the ones ``cls``
    declares itself, keyword-only, in the parent's order.
    """
    owner = next(klass for klass in cls.__mro__ if "__init__" in vars(klass))
    own = list(inspect.signature(vars(owner)["__init__"]).parameters.values())[1:]  # without `self`
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own):
        return inspect.Signature(own)
    parent = next(klass for klass in owner.__mro__[1:] if issubclass(klass, BaseImageDataModule))
    names = {p.name for p in own}
    inherited = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(parent).parameters.values()
        if p.name not in names and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    explicit = [p for p in own if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return inspect.Signature(explicit + inherited)
