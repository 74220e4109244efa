"""Transfer to semantic segmentation: the digit-mask canvases, from the quick start's classification source.

Source: the quick start's source recipe (:func:`benchmarks.common.source_weights`): ``resnet10t`` from random init
trained to classify every training scan of digits 0-4 at :data:`CELL` px, saved without its head.

Target: the digit-mask canvases of :mod:`lit_transfer.demo.segmentation_canvases` (2x2 grids of :data:`CELL` px
cells holding 1-3 scans of the digits 5-9, which the source never saw; each mask gives every stroke pixel its
digit's class, the rest ``background``; each split draws from its own scans), read from PNG files through
:class:`~lit_transfer.data.SegmentationCSVDataModule`. A ``TransferSegmenter`` (the source backbone as encoder, a
U-Net decoder of width :data:`DECODER_CHANNELS`, cross-entropy) trains on the first 5, 20 or 50 training canvases
with each policy:

* ``frozen encoder``: the decoder and head train, the encoder stays frozen (``linear_probe``, which the segmenter
  reads as ``UnfreezeAtEpochs({0: 2})``);
* ``LP-FT``: the decoder and head for the first third of the epochs, then everything;
* ``full fine-tune`` and ``full fine-tune + layer decay`` (:data:`LAYER_DECAY`);
* ``auto`` (:class:`~lit_transfer.freezing.AutoFreeze` with its defaults; its trials score the candidates on
  :data:`VAL` validation canvases, which no other row uses);
* ``scratch``: the same network from random init, everything training.

Every row: about :data:`STEPS` optimizer steps (the epochs are ``ceil(STEPS / steps per epoch)``), batch
:data:`BATCH`, AdamW (lr :data:`LR`, weight decay 0.05), the default warmup + cosine schedule, no augmentation, no
validation epochs; scored by the mean IoU over the 6 classes (``test_miou``) on :data:`TEST` test canvases; mean ±
std over seeds 0, 1, 2 (the seed draws the decoder's and head's initialisation and the training order; the canvases
are the same). The transfer gain is full fine-tuning minus scratch, as measured.
"""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

CELL = 32
"""Cell size (px) of the canvases and input size of the source task: the 64 px canvases hold 32 px digits."""
SHOTS = (5, 20, 50)
TEST = 100
VAL = 24
STEPS = 60
BATCH = 8
LR = 2e-3
WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.7
DECODER_CHANNELS = 64
SEEDS = (0, 1, 2)
QUICK: dict[str, Any] = {
    "source_epochs": 2,
    "steps": 4,
    "shots": (5, 20),
    "test": 16,
    "val": 20,
    "seeds": (0,),
    "auto": {"max_trial_share": None},
}
"""``--quick``: a smoke test of the code path (a 2-epoch source, 4 steps per row, 16 test canvases, one seed;
``auto``'s trials run although such a short run would skip them)."""


def policies(epochs: int, auto: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Policy name -> segmenter arguments for a run of ``epochs`` (``pretrained`` is filled in by :func:`train`).

    ``auto``: arguments of ``auto``'s :class:`~lit_transfer.freezing.AutoFreeze` (none: its defaults).
    """
    from lit_transfer import AutoFreeze, FreezeUnfreeze, FullFineTune, LinearProbe

    switch = max(1, epochs // 3)
    return {
        "frozen encoder": {"freeze": LinearProbe()},
        f"LP-FT (all from epoch {switch} of {epochs})": {"freeze": FreezeUnfreeze(unfreeze_at_epoch=switch)},
        "full fine-tune": {"freeze": FullFineTune()},
        f"full fine-tune + layer decay {LAYER_DECAY:g}": {"freeze": FullFineTune(), "layer_decay": LAYER_DECAY},
        "auto": {"freeze": AutoFreeze(**(auto or {}))},
        "scratch": {"freeze": FullFineTune(), "scratch": True},
    }


def _table(root: Path, split: str, count: int | None, out: Path) -> Path:
    """A CSV of the first ``count`` (image, mask) pairs of ``split`` (all with ``None``)."""
    images = sorted((root / split / "images").glob("*.png"))[:count]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        for image in images:
            mask = root / split / "masks" / image.name
            writer.writerow([image.relative_to(out.parent).as_posix(), mask.relative_to(out.parent).as_posix()])
    return out


def epochs_for(shots: int, steps: int) -> int:
    """Epochs that give about ``steps`` optimizer steps on ``shots`` samples at batch :data:`BATCH`."""
    return max(2, math.ceil(steps / math.ceil(shots / BATCH)))


def train(
    spec: dict[str, Any], weights: str, csvs: dict[str, Path], classes: Path, seed: int, epochs: int
) -> tuple[float, tuple[str, str] | None]:
    """Fit one policy on ``csvs`` (``train``, ``val``, ``test``); its test mIoU (%) and ``auto``'s choice and why."""
    import lightning as L
    import torch

    from lit_transfer import TransferSegmenter
    from lit_transfer.data import SegmentationCSVDataModule

    L.seed_everything(seed, verbose=False)
    data = SegmentationCSVDataModule(
        csvs["train"],
        val_csv=csvs["val"],
        test_csv=csvs["test"],
        classes_file=classes,
        val_fraction=0,
        image_size=2 * CELL,
        batch_size=BATCH,
        num_workers=0,
        train_transform="none",
        seed=seed,
    )
    model = TransferSegmenter(
        common.BACKBONE,
        num_classes=data.num_classes,
        class_names=data.class_names,
        pretrained=False if spec.get("scratch") else weights,
        decoder_channels=DECODER_CHANNELS,
        freeze=spec["freeze"],
        layer_decay=spec.get("layer_decay"),
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY),
    )
    trainer = common.make_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    miou = 100.0 * float(trainer.test(model, datamodule=data, verbose=False)[0]["test_miou"])
    plan = getattr(model.policy, "plan", None)
    return miou, None if plan is None else (plan.chosen, plan.reason)


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Every shot count x policy x seed; the table with the measured transfer gains."""
    from lit_transfer.demo.segmentation_canvases import write_segmentation_canvases

    common.set_threads(1)
    common.quiet()
    settings: dict[str, Any] = (
        QUICK
        if quick
        else {
            "source_epochs": None,
            "steps": STEPS,
            "shots": SHOTS,
            "test": TEST,
            "val": VAL,
            "seeds": SEEDS,
            "auto": {},
        }
    )
    weights, meta = common.source_weights(CELL, epochs=settings["source_epochs"])
    shots, seeds = tuple(settings["shots"]), tuple(settings["seeds"])
    results: dict[int, dict[str, list[float]]] = {}
    names: list[str] = []
    chosen: dict[int, list[str]] = {}
    reasons: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = write_segmentation_canvases(
            Path(folder) / "canvases",
            train=max(shots),
            val=settings["val"],
            test=settings["test"],
            predict=0,
            cell=CELL,
            seed=0,
        )
        csvs = {split: _table(root, split, None, Path(folder) / f"{split}.csv") for split in ("val", "test")}
        for count in shots:
            csvs["train"] = _table(root, "train", count, Path(folder) / f"train_{count}.csv")
            epochs = epochs_for(count, settings["steps"])
            table = policies(epochs, settings["auto"])
            names = names or [n.split(" (")[0] for n in table]
            results[count] = {}
            for seed in seeds:
                for spec, short in zip(table.values(), names):
                    miou, choice = train(spec, str(weights), csvs, root / "classes.txt", seed, epochs)
                    results[count].setdefault(short, []).append(miou)
                    if choice is not None:
                        chosen.setdefault(count, []).append(choice[0])
                        reasons.setdefault(count, []).append(choice[1])
    gains = {n: [a - b for a, b in zip(results[n]["full fine-tune"], results[n]["scratch"])] for n in shots}
    rows = [[name, *(common.fmt_pm(results[n][name]) for n in shots)] for name in names]
    markdown = "\n\n".join(
        [
            "### Semantic segmentation transfer: the digit-mask canvases",
            f"Source: the quick start's source recipe, `{common.BACKBONE}` trained from scratch to classify all"
            f" training scans of digits 0-4 at {CELL}x{CELL} for {meta['epochs']} epochs (source test accuracy"
            f" {meta['source_test_acc']:.1f} %), its backbone the encoder of a `TransferSegmenter` (U-Net decoder"
            f" of width {DECODER_CHANNELS}, cross-entropy). Target: {2 * CELL}x{2 * CELL} px canvases of the digits"
            " 5-9, which the source never saw (`python -m lit_transfer.demo.segmentation_canvases`: every stroke"
            " pixel labelled with its digit's class, 6 classes with the background), read from PNG files through"
            f" `SegmentationCSVDataModule`; trained on the first {', '.join(map(str, shots))} canvases, scored by"
            f" the test mIoU (%) on {settings['test']} canvases drawn from held-out scans. Every row about"
            f" {settings['steps']} optimizer steps (epochs = ceil(steps / steps per epoch)), batch {BATCH}, AdamW lr"
            f" {LR:g}, weight decay {WEIGHT_DECAY:g}, warmup + cosine, no augmentation; LP-FT trains the decoder and"
            " head for the first third of the epochs; `auto` scores its candidates on"
            f" {settings['val']} validation canvases, which no other row uses; mean ± std over"
            f" {len(seeds)} seed(s).",
            common.md_table(["Policy", *(f"{n} masks: test mIoU (%)" for n in shots)], rows),
            "Transfer gain, full fine-tuning minus scratch (same budget), as measured: "
            + "; ".join(f"{n} masks {common.fmt_pm(gains[n])} points" for n in shots)
            + " (a negative value: scratch was better).",
            "`auto` chose, per seed: " + "; ".join(f"{n} masks: {', '.join(chosen.get(n, []))}" for n in shots) + ".",
        ]
    )
    return {
        "results": {str(n): r for n, r in results.items()},
        "transfer_gain_miou_points": {str(n): g for n, g in gains.items()},
        "auto_chose": {str(n): c for n, c in chosen.items()},
        "auto_reasons": {str(n): r for n, r in reasons.items()},
        "source": meta,
        "config": {
            "cell": CELL,
            "shots": list(shots),
            "test": settings["test"],
            "val": settings["val"],
            "steps": settings["steps"],
            "batch": BATCH,
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "layer_decay": LAYER_DECAY,
            "decoder_channels": DECODER_CHANNELS,
            "seeds": list(seeds),
        },
        "targets": {},
        "markdown": markdown,
    }
