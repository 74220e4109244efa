"""DataLoader worker setup: distinct, reproducible augmentation streams, one OpenCV thread per worker.

Albumentations 2 pipelines own a private generator; forked workers inherit identical copies, and non-persistent
workers are re-forked from the unchanged parent every epoch, so without reseeding every worker and every epoch
draws the same crops. :func:`seed_worker` reseeds the pipeline from the worker's seed (which torch
derives from the loader's base seed, drawn from :attr:`EpochSampler.loader_generator`, itself a function of
(seed, epoch)) and the global rank. OpenCV is limited to the worker's own thread.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn`` for every lit_transfer DataLoader.

    Reseeds the dataset's Albumentations pipeline from ``get_worker_info().seed`` and ``rank``, chains
    Lightning's ``pl_worker_init_function`` when ``seed_everything(..., workers=True)`` set ``PL_SEED_WORKERS``
    (a custom ``worker_init_fn`` otherwise switches Lightning's off), and sets ``cv2.setNumThreads(0)`` and
    ``cv2.ocl.setUseOpenCL(False)``.

    Args:
        worker_id: Passed by the DataLoader.
        rank: Global rank of the process (bind with ``functools.partial``).
    """
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        pl_worker_init_function(worker_id, rank=rank)
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    seed = int(np.random.SeedSequence([info.seed % 2**63, rank]).generate_state(1)[0])
    reseed = getattr(info.dataset, "seed_transform", None)
    if callable(reseed):
        reseed(seed)
