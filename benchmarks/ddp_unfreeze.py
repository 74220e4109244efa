"""DDP step time after an unfreeze against a plain DDP full fine-tune, with the replicas bit-identical at the end.

Two processes train ``TransferClassifier`` on ``resnet18`` (random init; the weights do not change the cost) at
64x64, batch 16 per process, AdamW, in-memory tensors, through Lightning Trainers with ``strategy="ddp"``: gloo on
the CPU (one torch thread per process), NCCL when two GPUs are available. The processes are started once by
``torch.multiprocessing`` and run every fit in turn, so process start-up is not timed, and the mechanisms alternate
within each repeat (the order rotates from one repeat to the next):

* ``full_fine_tune``: every parameter trains from the start, no ``LayerFreezing``: plain DDP, the reference.
* ``freeze_unfreeze``: ``FreezeUnfreeze(unfreeze_at_epoch=1)`` as the package runs it: the backbone is frozen before
  DDP wraps the model, and ``LayerFreezing`` wraps it again at the unfreeze, so DDP's bucketed reducer averages
  every trainable gradient during backward.
* ``flat_all_reduce`` (full suite only): the mechanism the package used before: DDP keeps its phase-0
  registration (the head) and the callback averages the late-unfrozen gradients itself, in one flat all-reduce
  after backward.
* ``find_unused`` (full suite only): DDP wraps while every parameter requires grad, the backbone is frozen after
  the wrap, ``find_unused_parameters=True``.

Epoch 0 is the linear probe (its first steps are warm-up), epoch 1 the first unfrozen epoch (warm-up), epochs 2+ are
timed; the full fine-tune runs the same epochs on the same data. A step is the time from ``on_train_batch_start`` to
``on_train_batch_end`` on rank 0 (forward, backward, gradient communication, optimizer step, hooks and ``self.log``;
on a GPU after a synchronize). The ratio of a mechanism is the median over repeats of its median step time divided by
the full fine-tune's in the same repeat (both measured back to back, which cancels most of a shared machine's load
drift). At the end of every fit all parameters are gathered from both ranks and compared bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import common
from lit_transfer._compat import is_accumulating
from lit_transfer.callbacks import LayerFreezing

MODEL, IMAGE_SIZE, BATCH, CLASSES, WORLD = "resnet18", 64, 16, 5, 2
REFERENCE = "full_fine_tune"
DESCRIPTIONS = {
    "freeze_unfreeze": "`LayerFreezing` re-wraps DDP at the unfreeze (the package)",
    "flat_all_reduce": "flat all-reduce after backward (the previous mechanism)",
    "find_unused": "wrap all, freeze after the wrap, `find_unused_parameters=True`",
    "full_fine_tune": "plain DDP full fine-tune (reference)",
}
TARGET, PROBE_TARGET = 1.10, 0.4


class FlatAllReduce(LayerFreezing):
    """The previous mechanism: DDP keeps the registration of its wrap; late-unfrozen gradients are averaged here."""

    def _follow_in_ddp(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return None

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._ddp_registered is None or is_accumulating(trainer):
            return
        params = [p for p in pl_module.parameters() if p.requires_grad and id(p) not in self._ddp_registered]
        if not params:
            return
        grads = []
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad)
        flat = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


class FreezeAfterWrap(LayerFreezing):
    """DDP registers every parameter; phase 0 is frozen after the wrap (needs ``find_unused_parameters=True``)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        for param in pl_module.parameters():
            param.requires_grad_(True)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._apply(self.policy.trainable_depth(0, len(self.groups)), pl_module, announce=False)

    def _follow_in_ddp(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return None


def _settings(quick: bool) -> dict[str, Any]:
    """Mechanisms, repeats, steps per epoch, epochs (the first two untimed) and linear-probe warm-up steps."""
    if quick:
        return {"variants": [REFERENCE, "freeze_unfreeze"], "repeats": 3, "steps": 4, "epochs": 3, "probe_warmup": 1}
    variants = [REFERENCE, "freeze_unfreeze", "flat_all_reduce", "find_unused"]
    return {"variants": variants, "repeats": 8, "steps": 6, "epochs": 3, "probe_warmup": 2}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _callbacks(out: dict[str, Any], cuda: bool) -> list[Any]:
    """A per-epoch step timer and an end-of-fit cross-rank parameter comparison, writing into ``out``."""
    from lightning.pytorch.callbacks import Callback

    class Probe(Callback):
        def __init__(self) -> None:
            self.start = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            out.setdefault("steps", {}).setdefault(trainer.current_epoch, []).append(time.perf_counter() - self.start)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            gathered = trainer.strategy.all_gather(flat)
            out["max_param_diff"] = float((gathered.max(0).values - gathered.min(0).values).abs().max())

    return [Probe()]


def _fit(variant: str, settings: dict[str, Any], seed: int, cuda: bool) -> dict[str, Any]:
    """One DDP fit of ``variant`` in this (already started) process: its step times per epoch and replica spread."""
    from lightning.pytorch.strategies import DDPStrategy

    from lit_transfer import FreezeUnfreeze, TransferClassifier

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(WORLD * BATCH * settings["steps"], 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, CLASSES, (len(x),), generator=generator)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    policy = FreezeUnfreeze(unfreeze_at_epoch=1)
    freeze: Any = policy if variant == "freeze_unfreeze" else "full_fine_tune"
    extra: list[LayerFreezing] = []
    if variant == "flat_all_reduce":
        extra = [FlatAllReduce(policy)]
    elif variant == "find_unused":
        extra = [FreezeAfterWrap(policy)]
    torch.manual_seed(seed)
    model = TransferClassifier(MODEL, num_classes=CLASSES, pretrained=False, freeze=freeze)
    out: dict[str, Any] = {}
    trainer = common.make_trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=WORLD,
        strategy=DDPStrategy(
            process_group_backend="nccl" if cuda else "gloo", find_unused_parameters=variant == "find_unused"
        ),
        max_epochs=settings["epochs"],
        limit_val_batches=0,
        callbacks=[*extra, *_callbacks(out, cuda)],
    )
    trainer.fit(model, train_dataloaders=loader)
    return out


def _worker(rank: int, port: int, settings: dict[str, Any], cuda: bool, path: str) -> None:
    """Entry point of each spawned process: run every fit of every repeat; rank 0 writes the records to ``path``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        RANK=str(rank),
    )
    if not cuda:
        os.environ["OMP_NUM_THREADS"] = "1"
        common.set_threads(1)
    common.quiet()
    import warnings

    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
    variants = list(settings["variants"])
    runs: list[dict[str, Any]] = []
    for repeat in range(settings["repeats"]):
        shift = repeat % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            runs.append({"variant": variant, "repeat": repeat, **_fit(variant, settings, seed=repeat, cuda=cuda)})
    if rank == 0:
        Path(path).write_text(json.dumps(runs))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def measure(settings: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Start the two processes, run every fit, return rank 0's records and the backend used."""
    import torch.multiprocessing as mp

    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= WORLD
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "runs.json")
        mp.spawn(_worker, args=(_free_port(), settings, cuda, path), nprocs=WORLD, join=True)
        runs = json.loads(Path(path).read_text())
    return runs, f"NCCL on {WORLD} GPUs" if cuda else "gloo on the CPU, one torch thread per process"


def _steps(record: dict[str, Any], epochs: range, skip: int = 0) -> list[float]:
    return [t for epoch in epochs for t in record["steps"].get(str(epoch), [])[skip:]]


def summarise(runs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per mechanism: median step times (ms) of the probe phase and after the unfreeze, paired ratios, spread."""
    timed, probe_epochs = range(2, settings["epochs"]), range(1)
    by_key = {(r["variant"], r["repeat"]): r for r in runs}
    figures: dict[str, dict[str, Any]] = {}
    for variant in settings["variants"]:
        mine = [r for r in runs if r["variant"] == variant]
        after = [common.median(_steps(r, timed)) for r in mine]
        reference = [common.median(_steps(by_key[REFERENCE, r["repeat"]], timed)) for r in mine]
        probe = [common.median(_steps(r, probe_epochs, settings["probe_warmup"])) for r in mine]
        figures[variant] = {
            "after_ms": 1000 * common.median(after),
            "ratio": common.median([a / b for a, b in zip(after, reference)]),
            "ratios": [a / b for a, b in zip(after, reference)],
            "probe_ms": 1000 * common.median(probe),
            "probe_ratio": common.median([p / b for p, b in zip(probe, reference)]),
            "max_param_diff": max(r["max_param_diff"] for r in mine),
        }
    return figures


def run(quick: bool) -> dict[str, Any]:
    """Step time after an unfreeze vs a plain DDP full fine-tune; linear-probe phase; replica spread."""
    common.quiet()
    settings = _settings(quick)
    runs, backend = measure(settings)
    figures = summarise(runs, settings)
    ours = figures["freeze_unfreeze"]
    targets = {
        f"step after an unfreeze / plain DDP full fine-tune <= {TARGET:.2f}": ours["ratio"] <= TARGET,
        f"linear-probe phase step / full fine-tune step <= {PROBE_TARGET}": ours["probe_ratio"] <= PROBE_TARGET,
        "replicas bit-identical after an unfreeze (max abs param diff == 0)": ours["max_param_diff"] == 0.0,
    }
    rows = []
    for variant in settings["variants"]:
        f = figures[variant]
        reference = variant == REFERENCE
        rows.append(
            [
                DESCRIPTIONS[variant],
                "" if reference else f"{f['probe_ms']:.1f} ({f['probe_ratio']:.2f})",
                f"{f['after_ms']:.1f}",
                "1" if reference else f"**{f['ratio']:.3f}** ({', '.join(f'{x:.2f}' for x in f['ratios'])})",
                f"{f['max_param_diff']:.3g}",
            ]
        )
    verdicts = [common.verdict(ok) for ok in targets.values()]
    markdown = "\n\n".join(
        [
            "### DDP after an unfreeze vs plain DDP",
            f"`{MODEL}`, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH} per process, {WORLD} processes ({backend}), AdamW,"
            f' Lightning `strategy="ddp"`; `FreezeUnfreeze(unfreeze_at_epoch=1)` against a full fine-tune on the'
            f" same data; {settings['repeats']} interleaved repeats x {settings['epochs']} epochs x"
            f" {settings['steps']} steps, epochs 2+ timed on rank 0 (the ratio: median over repeats of each repeat's"
            " ratio of median steps, per-repeat ratios in brackets).",
            common.md_table(
                [
                    "Mechanism",
                    "Linear-probe step, ms (vs full)",
                    "Step after the unfreeze, ms",
                    "After / full fine-tune",
                    "Max abs param diff across ranks",
                ],
                rows,
            ),
            f"Step after an unfreeze / plain DDP full fine-tune: **{ours['ratio']:.3f}**. Target <= {TARGET:.2f}:"
            f" **{verdicts[0]}**. Linear-probe phase: {ours['probe_ratio']:.2f}x a full fine-tune step (no backward"
            f" through the frozen backbone, only the head's gradients communicated); target <= {PROBE_TARGET}:"
            f" **{verdicts[1]}**. Replicas bit-identical after the unfreeze: **{verdicts[2]}**.",
        ]
    )
    return {"backend": backend, "settings": settings, "figures": figures, "targets": targets, "markdown": markdown}
