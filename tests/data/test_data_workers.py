"""Distinct, reproducible augmentation streams per worker and epoch; OpenCV threads in workers (H1, H5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lit_transfer.data import ImageFolderDataModule, seed_worker


def _same_image_folder(root: Path, copies: int = 4) -> Path:
    yy, xx = np.mgrid[0:40, 0:40]
    image = Image.fromarray(np.stack([xx * 6, yy * 6, (xx + yy) * 3], -1).astype(np.uint8))
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(copies):
            image.save(root / "train" / cls / f"{i}.png")
    return root


def _hashes(root: Path, num_workers: int, persistent: bool, seed: int = 0, epochs: int = 3) -> list[str]:
    seed_everything(123, workers=True)
    dm = ImageFolderDataModule(
        root,
        num_workers=num_workers,
        persistent_workers=persistent,
        batch_size=2,
        image_size=24,
        val_fraction=0,
        seed=seed,
        train_transform="heavy",
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # as Lightning does at every epoch start
        for images, _ in loader:
            out.extend(hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images)
    return out


@pytest.mark.parametrize(("num_workers", "persistent"), [(2, False), (2, True), (0, False)])
def test_augmentations_distinct_and_reproducible(tmp_path: Path, num_workers: int, persistent: bool) -> None:
    root = _same_image_folder(tmp_path)
    first = _hashes(root, num_workers, persistent)
    assert len(first) == 24
    assert len(set(first)) == 24  # every worker, every epoch, every sample differs
    torch.manual_seed(999)  # the global RNG state at loader creation must not matter
    assert _hashes(root, num_workers, persistent) == first
    assert _hashes(root, num_workers, persistent, seed=1) != first


def test_workers_match_across_worker_persistence(tmp_path: Path) -> None:
    """The first epoch's stream is the same with persistent and non-persistent workers (same seeds)."""
    root = _same_image_folder(tmp_path)
    assert _hashes(root, 2, True, epochs=1) == _hashes(root, 2, False, epochs=1)


class _Probe(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, bool]:
        return cv2.getNumThreads(), cv2.ocl.useOpenCL()


def test_opencv_single_thread_in_workers() -> None:
    loader = DataLoader(_Probe(), batch_size=1, num_workers=2, worker_init_fn=seed_worker)
    for threads, opencl in loader:
        assert threads.item() == 1
        assert not opencl.item()
