"""The layer-group-aware LR finder: what the range test trains, that it leaves no trace, the callback, the CLI."""

from __future__ import annotations

import csv
import functools
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from callback_helpers import assert_same_updates
from quiet import QUIET

from lit_transfer import FreezeUnfreeze, GroupLRFinder, TransferClassifier, find_lr
from lit_transfer.data import DigitsDataModule
from lit_transfer.tuner.suggest import RULES, smooth_losses, suggest_lr

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
LAYER_DECAY = 0.5


def _data() -> DigitsDataModule:
    return DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=16, num_workers=0)


def _adamw(lr: float) -> Any:
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.05)


class RecordingClassifier(TransferClassifier):
    """A classifier that records, at each optimizer step, every group's LR and which parameters have gradients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[dict[str, Any]] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        with_grad = {name.split(".")[0] for name, p in self.backbone.named_parameters() if p.grad is not None}
        self.steps.append({"lrs": [g["lr"] for g in optimizer.param_groups], "with_grad": with_grad})


def _model(lr: float = 1e-3, cls: type[TransferClassifier] = TransferClassifier) -> TransferClassifier:
    return cls(
        "test_resnet",
        num_classes=3,
        pretrained=False,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
        layer_decay=LAYER_DECAY,
        optimizer=_adamw(lr),
    )


def _trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(**{**QUIET, "max_epochs": 2, "limit_val_batches": 2, **kwargs})


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def test_range_test_trains_the_first_phase_with_one_factor_for_every_group() -> None:
    L.seed_everything(0)
    model = _model(cls=RecordingClassifier)
    assert isinstance(model, RecordingClassifier)
    num_steps = 12  # longer than an epoch of the 3-class digits at batch 16: the phase must stay pinned
    result = find_lr(model, _data(), num_steps=num_steps, min_lr=1e-4, max_lr=1e-1, diverge_factor=None)
    assert len(result.lrs) == num_steps and len(model.steps) == num_steps
    assert result.trainable_groups == "1/6"
    for step in model.steps:
        assert step["with_grad"] == {"fc"}  # only the head: frozen groups stay frozen past the epoch boundary
    expected = [1e-4 * 1000 ** (k / (num_steps - 1)) for k in range(num_steps)]
    assert result.lrs == pytest.approx(expected)
    ratios = [LAYER_DECAY ** (5 - i // 2) for i in range(12)]  # stem .. head, each with its no_decay twin
    for lr, step in zip(expected, model.steps):
        assert step["lrs"] == pytest.approx([lr * r for r in ratios])
    assert result.group_ratios["head"] == 1.0 and result.group_ratios["stem"] == pytest.approx(LAYER_DECAY**5)
    assert all(math.isfinite(v) for v in result.losses)


def test_fit_after_find_lr_equals_fit_without_it() -> None:
    L.seed_everything(3)
    model = _model()
    before = _weights(model)
    flags = [p.requires_grad for p in model.parameters()]
    result = find_lr(model, _data(), num_steps=10, max_lr=10.0)
    _assert_same(before, _weights(model))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert result.suggestion is not None
    _trainer().fit(model, _data())

    L.seed_everything(3)
    fresh = _model()
    _trainer().fit(fresh, _data())
    _assert_same(_weights(fresh), _weights(model))


def test_callback_trains_with_the_suggestion_as_if_it_were_configured(tmp_path: Path) -> None:
    """GroupLRFinder's fit equals a fit configured with the suggested LR, bit for bit (the test leaves no trace)."""
    L.seed_everything(5)
    model = _model(lr=1.0)  # a configured lr of 1: scaling by the suggestion is exact in floating point
    finder = GroupLRFinder(num_steps=10, min_lr=1e-4, max_lr=1.0, out_dir=tmp_path / "lr_find")
    _trainer(callbacks=[finder]).fit(model, _data())
    assert finder.result is not None and finder.result.suggestion is not None
    suggestion = finder.result.suggestion
    assert (tmp_path / "lr_find" / "loss_vs_lr.png").stat().st_size > 0
    with (tmp_path / "lr_find" / "loss_vs_lr.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["lr"]) for r in rows] == pytest.approx(finder.result.lrs, rel=1e-5)

    L.seed_everything(5)
    configured = _model(lr=suggestion)
    _trainer().fit(configured, _data())
    _assert_same(_weights(configured), _weights(model))


def test_rules_read_the_expected_points_of_a_synthetic_curve() -> None:
    lrs = [10 ** (-6 + 6 * k / 99) for k in range(100)]
    # flat, then a fall between 1e-4 and 1e-2, then a blow-up
    losses = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + (50 * lr if lr > 0.05 else 0) for lr in lrs]
    smoothed = smooth_losses(losses, beta=0.0)
    steep = suggest_lr(lrs, smoothed, "steep")
    assert steep == pytest.approx(1e-3, rel=0.2)  # the inflection of the fall
    minimum = suggest_lr(lrs, smoothed, "minimum")
    assert minimum is not None and 1e-3 < minimum < 1e-2  # a tenth of the lowest point, which is past 1e-2
    valley = suggest_lr(lrs, smoothed, "valley")
    assert valley is not None and 1e-4 < valley < 5e-2
    assert suggest_lr(lrs[:2], smoothed[:2], "valley") is None
    with pytest.raises(ValueError, match="rule"):
        suggest_lr(lrs, smoothed, "median")
    assert set(RULES) == {"valley", "steep", "minimum"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_steps": 2}, "num_steps"),
        ({"min_lr": 0.0}, "min_lr"),
        ({"max_lr": 1e-7}, "max_lr"),
        ({"max_lr": True}, "max_lr"),  # a bool is not a learning rate
    ],
)
def test_bad_range_is_refused_before_training(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GroupLRFinder(**options)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


TINY = [
    "--config",
    str(REPO / "recipes" / "defaults.yaml"),
    "--model.backbone",
    "test_resnet",
    "--data.image_size",
    "16",
    "--data.classes",
    "[0, 1, 2]",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.default_root_dir",
    "runs",
]


def test_cli_lr_find_prints_the_override_and_writes_the_run_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LIT_TRANSFER), "lr-find", *TINY, "--num_steps", "20", "--max_lr", "10"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = [line.strip() for line in result.stdout.splitlines() if "--model.optimizer.init_args.lr=" in line]
    assert len(found) == 1, result.stdout
    lr = float(found[0].split("=", 1)[1])
    assert 1e-6 <= lr <= 10
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    assert (run / "lr_find" / "loss_vs_lr.png").stat().st_size > 0
    with (run / "lr_find" / "loss_vs_lr.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert 5 <= len(rows) <= 20 and float(rows[0]["lr"]) == pytest.approx(1e-6)
    assert (run / "config.yaml").is_file()
    assert not list(tmp_path.rglob("*.ckpt"))  # a range test writes no checkpoint


def test_cli_lr_find_bad_input_exits_2_with_the_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LIT_TRANSFER), "lr_find", *TINY, "--num_steps", "2"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("`num_steps` must be an integer of at least 5")
    assert "Traceback" not in result.stderr


class _Interleaved(L.LightningDataModule):
    """Fixed data, unshuffled: global batch k holds the same samples on 1 process and on 2 (interleaved) ranks."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        gen = torch.Generator().manual_seed(3)
        self.dataset = torch.utils.data.TensorDataset(
            torch.randn(48, 3, 32, 32, generator=gen), torch.randint(0, 3, (48,), generator=gen)
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        world = self.trainer.world_size
        sampler = (
            torch.utils.data.DistributedSampler(self.dataset, world, self.trainer.global_rank, shuffle=False)
            if world > 1
            else None
        )
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, shuffle=False)


class _Outcome(L.Callback):
    """Rank 0 saves the finder's curve, the head's LR and the final weights; every epoch checks replica spread."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.spreads: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        spread = float((gathered.max(0).values - gathered.min(0).values).abs().max()) if gathered.ndim == 2 else 0.0
        self.spreads.append(spread)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        finder = next(c for c in trainer.callbacks if isinstance(c, GroupLRFinder))  # type: ignore[attr-defined]
        assert finder.result is not None
        head = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "head")
        if trainer.is_global_zero:
            torch.save(
                {
                    "losses": finder.result.losses,
                    "suggestion": finder.result.suggestion,
                    "head_initial_lr": head["initial_lr"],
                    "spreads": self.spreads,
                    "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                },
                self.out,
            )


def _ddp_model() -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier(
        "test_convnext",  # LayerNorm: no per-rank batch statistics
        num_classes=3,
        pretrained=False,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
        layer_decay=0.8,
        optimizer=_adamw(1e-3),
    )


def _ddp_run(tmp_path: Path, devices: int) -> dict[str, Any]:
    model = _ddp_model()
    out = tmp_path / f"outcome{devices}.pt"
    trainer = _trainer(
        callbacks=[
            GroupLRFinder(num_steps=12, min_lr=1e-4, max_lr=1.0, out_dir=tmp_path / f"lr{devices}"),
            _Outcome(out),
        ],
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        use_distributed_sampler=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=_Interleaved(batch_size=8 // devices))
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.ddp
def test_callback_under_ddp_matches_one_process(tmp_path: Path) -> None:
    """Two ranks record the same curve as one process (losses averaged over ranks), suggest the same LR, stay equal."""
    single, double = _ddp_run(tmp_path, 1), _ddp_run(tmp_path, 2)
    assert double["losses"] == pytest.approx(single["losses"], rel=1e-4)
    assert double["suggestion"] == single["suggestion"] is not None
    assert double["head_initial_lr"] == pytest.approx(single["suggestion"])
    assert all(s == 0.0 for s in double["spreads"]), double["spreads"]
    assert_same_updates(_ddp_model().state_dict(), single["weights"], double["weights"])


class HeadAtEachStep(TransferClassifier):
    """A classifier that records its head's weights before every optimizer step (range test steps included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heads: list[torch.Tensor] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.heads.append(self.backbone.get_classifier().weight.detach().clone())


def test_with_probe_views_the_range_test_runs_from_the_initial_head_and_the_fit_from_the_fitted_one(
    tmp_path: Path,
) -> None:
    """As docs/lr-finder.md says: the test at the start of `fit`, the head probe after it, at the start of training."""
    L.seed_everything(5)
    model = HeadAtEachStep(
        "test_resnet", num_classes=3, pretrained=False, freeze=FreezeUnfreeze(unfreeze_at_epoch=1), probe_views=1
    )
    initial = model.backbone.get_classifier().weight.detach().clone()
    finder = GroupLRFinder(num_steps=6, min_lr=1e-4, max_lr=1e-1, out_dir=tmp_path / "lr_find")
    _trainer(callbacks=[finder], max_epochs=1, limit_train_batches=2).fit(model, _data())
    assert finder.result is not None
    tested = len(finder.result.lrs)
    assert tested >= 2 and len(model.heads) == tested + 2  # the test's steps, then the fit's two
    assert torch.equal(model.heads[0], initial)
    assert not torch.allclose(model.heads[tested], initial, atol=1e-3)  # the fit's first step: the probed head
