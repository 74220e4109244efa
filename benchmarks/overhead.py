"""Step-time overhead of lit_transfer's training step against a hand-written PyTorch loop on the same model.

Both sides train a randomly initialised ``resnet10t`` on the same in-memory tensors (DataLoader over a
``TensorDataset``, no workers), with AdamW and a per-step LambdaLR. The lit_transfer side is a
``TransferClassifier`` with ``freeze=FreezeUnfreeze(unfreeze_at_epoch=0)`` (so ``LayerFreezing`` runs but every
group trains, the same compute as the plain loop), ``LRScaling`` with a warmup that lasts the whole run (its
optimizer hooks fire every step), ``RunReport`` (per-step rows) and ``NonFiniteLossGuard``, through a Lightning
``Trainer`` with the progress bar and the logger off (``self.log`` and the torchmetrics updates still run).

The two sides alternate **step by step** in one process, so that the load of a shared machine falls on both
alike: at every ``on_train_batch_start`` a callback runs and times one step of the plain loop (fetch its batch,
forward, backward, AdamW, schedule), then Lightning runs its own step. A lit_transfer step is the time from the
end of that plain step to the next batch start: data fetch, forward, backward, optimizer step, every hook and
``self.log``. Warm-up steps are skipped; the figure is the ratio of median step times, at 32x32 and 64x64
inputs. Two bare LightningModules (the plain loop as a ``training_step``, with torch's one parameter group or
with lit_transfer's named groups) are measured the same way to show where the overhead comes from.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import common

SIZES, BATCH, CLASSES = (32, 64), 32, 5


def _loader(seed: int, size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH * 64, 3, size, size, generator=generator)
    y = torch.randint(0, CLASSES, (len(x),), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=generator)


class PlainLoop:
    """A hand-written training loop, advanced one step at a time: same model, data, batch, optimizer, schedule."""

    def __init__(self, seed: int, size: int = SIZES[0]) -> None:
        import timm

        torch.manual_seed(seed)
        self.model = timm.create_model(common.BACKBONE, num_classes=CLASSES, pretrained=False)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.loader = _loader(seed + 1000, size)
        self.batches: Iterator[Any] = iter(self.loader)

    def step(self) -> None:
        """One iteration: fetch a batch (a new epoch when the loader is exhausted), forward, backward, update."""
        try:
            x, y = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()


def bare_lightning_module(seed: int, named_groups: bool = False) -> Any:
    """The plain loop as the smallest LightningModule: same model, loss, optimizer and schedule, nothing logged.

    With ``named_groups`` its AdamW gets lit_transfer's parameter groups (one per timm layer group, split into
    decay / no-decay) instead of one group: the optimizer layout of ``TransferClassifier`` without anything else.
    """
    import lightning as L
    import timm

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = timm.create_model(common.BACKBONE, num_classes=CLASSES, pretrained=False)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> Any:
            from lit_transfer.freezing.layer_groups import layer_groups
            from lit_transfer.optim.param_groups import build_param_groups

            params: Any = self.parameters()
            if named_groups:
                params = build_param_groups(layer_groups(self.model), layer_decay=None, no_weight_decay_names=set())
            optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    torch.manual_seed(seed)
    return Bare()


SIDES = ("lit", "bare", "bare_groups")


def paired_steps(
    warmup: int, steps: int, seed: int = 0, side: str = "lit", size: int = SIZES[0]
) -> tuple[list[float], list[float]]:
    """Step times (seconds) of one Lightning side and of the plain loop, measured alternately.

    Args:
        warmup: Steps skipped at the start.
        steps: Steps timed.
        seed: Seed of both models and both data orders.
        side: ``"lit"`` (TransferClassifier and callbacks), ``"bare"`` (the smallest LightningModule) or
            ``"bare_groups"`` (that module with lit_transfer's named parameter groups).
        size: Height and width of the random input images.
    """
    from lightning.pytorch.callbacks import Callback

    from lit_transfer import FreezeUnfreeze, LRScaling, TransferClassifier
    from lit_transfer.callbacks import RunReport

    plain = PlainLoop(seed, size)

    class Alternate(Callback):
        """Runs one plain step at every batch start; times both sides."""

        def __init__(self) -> None:
            self.lit: list[float] = []
            self.plain: list[float] = []
            self._lit_start: float | None = None

        def on_train_batch_start(self, *args: Any) -> None:
            now = time.perf_counter()
            if self._lit_start is not None:
                self.lit.append(now - self._lit_start)
            plain.step()
            self._lit_start = time.perf_counter()
            self.plain.append(self._lit_start - now)

    alternate = Alternate()
    with tempfile.TemporaryDirectory() as out:
        if side != "lit":
            model = bare_lightning_module(seed, named_groups=side == "bare_groups")
            callbacks: list[Callback] = [alternate]
        else:
            torch.manual_seed(seed)
            model = TransferClassifier(
                common.BACKBONE,
                num_classes=CLASSES,
                pretrained=False,
                freeze=FreezeUnfreeze(unfreeze_at_epoch=0),
                optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05),
            )
            callbacks = [
                alternate,  # first: the other callbacks' batch-start hooks count as lit_transfer time
                LRScaling(rule="linear", base_batch_size=BATCH, warmup_steps=10_000),
                RunReport(output_dir=out, plots=False, summary=False),
            ]
        trainer = common.make_trainer(max_steps=warmup + steps + 1, callbacks=callbacks, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=_loader(seed, size))
    return alternate.lit[warmup : warmup + steps], alternate.plain[warmup : warmup + steps]


def run(quick: bool) -> dict[str, Any]:
    """Alternate each Lightning side with the plain loop step by step, at each input size; compare median steps."""
    common.set_threads(1)
    common.quiet()
    sizes, repeats, warmup, steps = ((32,), 1, 3, 8) if quick else (SIZES, 3, 5, 20)
    labels = {
        "lit": "lit_transfer (TransferClassifier + callbacks)",
        "bare": "bare LightningModule (same model, loss, optimizer)",
        "bare_groups": "bare LightningModule + lit_transfer's named param groups",
    }
    rows: list[list[Any]] = []
    targets: dict[str, bool] = {}
    figures: dict[int, dict[str, Any]] = {}
    verdicts: list[str] = []
    for size in sizes:
        times: dict[str, list[float]] = {key: [] for side in SIDES for key in (side, f"plain_{side}")}
        per_repeat: dict[str, list[float]] = {side: [] for side in SIDES}
        for r in range(repeats):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                side_times, plain_times = paired_steps(warmup, steps, seed=r, side=side, size=size)
                times[side].extend(side_times)
                times[f"plain_{side}"].extend(plain_times)
                per_repeat[side].append(common.median(side_times) / common.median(plain_times))
        med = {key: common.median(values) for key, values in times.items()}
        ratios = {side: med[side] / med[f"plain_{side}"] for side in SIDES}
        targets[f"{size}px: step-time ratio <= 1.05"] = ratios["lit"] <= 1.05
        figures[size] = {"ratios": ratios, "per_repeat": per_repeat, "median_ms": {k: 1000 * v for k, v in med.items()}}
        verdicts.append(
            f"{size}x{size}: **{ratios['lit']:.3f}** (**{common.verdict(ratios['lit'] <= 1.05)}**; the Lightning loop"
            f" alone {ratios['bare']:.3f}, with the named parameter groups {ratios['bare_groups']:.3f}; a lit_transfer"
            f" step takes {1000 * (med['lit'] - med['plain_lit']):.1f} ms more than a plain one)"
        )
        for side in SIDES:
            rows.append(
                [
                    f"{size}x{size}",
                    labels[side],
                    f"{1000 * med[side]:.1f}",
                    f"{1000 * med[f'plain_{side}']:.1f}",
                    f"**{ratios[side]:.3f}**" if side == "lit" else f"{ratios[side]:.3f}",
                    ", ".join(f"{v:.3f}" for v in per_repeat[side]),
                ]
            )
    markdown = "\n\n".join(
        [
            "### Training-step overhead",
            f"`{common.BACKBONE}` (random init), batch {BATCH}, AdamW (torch's default single-tensor implementation on"
            " CPU), one CPU thread. Each Lightning side alternates step by step with a hand-written loop in the same"
            f" process (shared-machine load falls on both alike); {repeats} run(s) per side and size x {steps} steps"
            f" after {warmup} warm-up steps. lit_transfer side: `TransferClassifier` with `LayerFreezing` (all groups"
            " trainable), `LRScaling` (warmup active), `RunReport`, `NonFiniteLossGuard`; progress bar and logger"
            " off, `self.log` and metrics on. The bare LightningModule is the plain loop written as a"
            " `training_step` with no logging (what the Lightning loop itself costs); the third row gives it"
            " lit_transfer's optimizer layout: one AdamW group per timm layer group, split into decay / no-decay (12"
            " groups for this model), which freezing, unfreezing and layer-wise LR decay act on. The overhead is a"
            " roughly fixed cost per step (Python work in the loop, the hooks and the optimizer's per-group calls),"
            " so its share shrinks as the step grows; the table gives two input sizes.",
            common.md_table(
                ["Input", "Side", "Median step (ms)", "Plain loop, same steps (ms)", "Ratio", "Per run"], rows
            ),
            "Step-time ratio lit_transfer / plain (target <= 1.05): " + "; ".join(verdicts) + ".",
        ]
    )
    first = figures[sizes[0]]
    return {
        "lit_ms": first["median_ms"]["lit"],
        "plain_ms": first["median_ms"]["plain_lit"],
        "ratio": first["ratios"]["lit"],
        "by_size": figures,
        "targets": targets,
        "markdown": markdown,
    }
