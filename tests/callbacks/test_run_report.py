from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from quiet import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.callbacks.report.run_report import RunReport
from lit_transfer.models import TransferClassifier


def _loader(n: int = 12, batch_size: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % 3
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _trainer(tmp_path: Path, report: RunReport, **kwargs) -> Trainer:
    options = dict(max_epochs=2, logger=CSVLogger(tmp_path, name="logs"), enable_checkpointing=True)
    options["callbacks"] = [report, ModelCheckpoint(monitor="val_loss")]
    return quiet_trainer(tmp_path, **{**options, **kwargs})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_fit_and_test_write_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, freeze="freeze_unfreeze", class_names=["cat", "dog", "fox"]
    )
    report = RunReport()
    trainer = _trainer(tmp_path, report)
    with caplog.at_level("INFO"):
        trainer.fit(model, _loader(), _loader(seed=1))
    out = Path(trainer.log_dir)
    assert out.parent.name == "logs"  # the logger's version folder
    for name in ("learning_curves.png", "schedule.png", "epochs.csv", "steps.csv"):
        assert (out / name).stat().st_size > 0, name
    epochs = _rows(out / "epochs.csv")
    assert [r["epoch"] for r in epochs] == ["0", "1"]
    assert {"train_loss", "val_loss", "val_acc", "train_acc"} <= set(epochs[0])
    assert all(r["val_loss"] for r in epochs)
    steps = _rows(out / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(6))
    assert {int(r["batch_size"]) for r in steps} == {4}
    assert {r["optimizer"] for r in steps} == {"AdamW"}
    assert "lr/head" in steps[0] and "lr/stem" in steps[0]
    assert not any(k.endswith(".no_decay") for k in steps[0])  # folded: same LR as their group
    # freeze_unfreeze: head only in epoch 0, all groups in epoch 1
    params = [int(r["trainable_params"]) for r in steps]
    groups = [int(r["trainable_groups"]) for r in steps]
    assert params[0] < params[-1] == sum(p.numel() for p in model.parameters())
    assert groups[0] == 1 and groups[-1] == 6
    summary = caplog.text
    assert "Run summary (fit" in summary and trainer.checkpoint_callback.best_model_path in summary
    assert "val_loss=" in summary and str(out) in summary

    caplog.clear()
    with caplog.at_level("INFO"):
        trainer.test(model, _loader(n=9, seed=2))
    assert (out / "confusion_matrix.png").stat().st_size > 0
    matrix = _rows(out / "confusion_matrix.csv")
    assert [r["true/predicted"] for r in matrix] == ["cat", "dog", "fox"] and list(matrix[0])[1:] == [
        "cat",
        "dog",
        "fox",
    ]
    assert report.confusion is not None and int(report.confusion.sum()) == 9
    assert report.confusion.sum(dim=1).tolist() == [3, 3, 3]
    rows = _rows(out / "epochs.csv")
    assert rows[-1]["stage"] == "test" and rows[-1]["test_acc"]
    assert "Run summary (test)" in caplog.text and "test_acc=" in caplog.text


def test_confusion_matrix_matches_predictions(tmp_path: Path) -> None:
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune").eval()
    loader = _loader(n=10, batch_size=3, seed=3)
    report = RunReport(output_dir=tmp_path / "report", summary=False)
    _trainer(tmp_path, report, logger=False, callbacks=[report]).test(model, loader)
    expected = torch.zeros(3, 3, dtype=torch.long)
    with torch.no_grad():
        for x, y in loader:
            for t, p in zip(y, model(x).argmax(-1)):
                expected[t, p] += 1
    assert torch.equal(report.confusion, expected)
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()


class _PlainModule(LightningModule):
    """A classification module whose test_step neither returns logits nor calls self(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def test_step(self, batch, batch_idx):
        self.log("test_loss", nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_any_module_without_validation_and_logger(tmp_path: Path) -> None:
    model = _PlainModule()
    report = RunReport(summary=False, class_names=["a", "b", "c"])
    trainer = _trainer(tmp_path, report, logger=False, callbacks=[report], default_root_dir=tmp_path, max_epochs=1)
    trainer.fit(model, _loader())
    assert (tmp_path / "learning_curves.png").is_file() and (tmp_path / "schedule.png").is_file()
    steps = _rows(tmp_path / "steps.csv")
    assert list(steps[0])[:3] == ["step", "epoch", "lr/pg1"]
    model.calls = 0
    trainer.test(model, _loader(n=6))
    assert model.calls == 2  # recomputed once per test batch, as test_step never called forward
    assert int(report.confusion.sum()) == 6
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_plots_off_and_resume_keeps_history(tmp_path: Path) -> None:
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="linear_probe")
    report = RunReport(output_dir=tmp_path / "r", plots=False, summary=False)
    trainer = _trainer(tmp_path, report, max_epochs=1, callbacks=[report, ModelCheckpoint(dirpath=tmp_path / "ck")])
    trainer.fit(model, _loader(), _loader(seed=1))
    assert not list((tmp_path / "r").glob("*.png"))
    ckpt = next((tmp_path / "ck").glob("*.ckpt"))
    resumed = RunReport(output_dir=tmp_path / "r2", summary=False)
    trainer = _trainer(tmp_path, resumed, max_epochs=2, callbacks=[resumed])
    trainer.fit(model, _loader(), _loader(seed=1), ckpt_path=ckpt)
    assert [r["epoch"] for r in _rows(tmp_path / "r2" / "epochs.csv")] == ["0", "1"]
    assert [int(r["step"]) for r in _rows(tmp_path / "r2" / "steps.csv")] == list(range(6))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="output_dir"):
        RunReport(output_dir=3)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_confusion_matrix_sums_ranks(tmp_path: Path) -> None:
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="freeze_unfreeze")
    report = RunReport(output_dir=tmp_path / "report", summary=False)
    trainer = _trainer(
        tmp_path, report, logger=False, callbacks=[report], max_epochs=1, strategy="ddp_spawn", devices=2
    )
    trainer.fit(model, _loader(n=8, batch_size=2))
    trainer.test(model, _loader(n=12, batch_size=3, seed=4))  # 6 per rank, no padding
    rows = _rows(tmp_path / "report" / "confusion_matrix.csv")
    assert sum(int(v) for row in rows for k, v in row.items() if k != "true/predicted") == 12
    assert [sum(int(v) for k, v in row.items() if k != "true/predicted") for row in rows] == [4, 4, 4]
    assert int(_rows(tmp_path / "report" / "steps.csv")[0]["batch_size"]) == 4  # 2 per device x 2 devices
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()


class _IndexModule(_PlainModule):
    """A module whose test_step returns class indices (not logits) and that states its class count."""

    num_classes = 4

    def test_step(self, batch, batch_idx):
        return self.net(batch[0]).argmax(-1)


def test_confusion_matrix_from_class_indices(tmp_path: Path) -> None:
    model = _IndexModule()
    loader = _loader(n=10, batch_size=4, seed=5)
    report = RunReport(output_dir=tmp_path / "report", summary=False, plots=False)
    _trainer(tmp_path, report, logger=False, callbacks=[report]).test(model, loader)
    expected = torch.zeros(4, 4, dtype=torch.long)  # num_classes=4: the unused class 3 has its row and column
    with torch.no_grad():
        for x, y in loader:
            for t, p in zip(y, model.net(x).argmax(-1)):
                expected[t, p] += 1
    assert torch.equal(report.confusion, expected)
    assert model.calls == 0  # the indices were used; the module was not run again
    rows = _rows(tmp_path / "report" / "confusion_matrix.csv")
    assert [r["true/predicted"] for r in rows] == ["0", "1", "2", "3"]


def test_logged_learning_rates_are_the_ones_the_steps_used_during_warmup(tmp_path: Path) -> None:
    """With LRScaling's warmup the report records each step's real LR (the warmup factor counted once)."""
    from callback_helpers import FixedDataModule, TinyRegressor, fit

    from lit_transfer import LRScaling

    report = RunReport(output_dir=tmp_path / "report", plots=False, summary=False)
    model = TinyRegressor(lr=0.01)
    warmup = LRScaling(rule="linear", base_batch_size=1, warmup_steps=6)
    fit(tmp_path, model, FixedDataModule(4), [warmup, report], max_epochs=1)
    rows = _rows(tmp_path / "report" / "steps.csv")
    logged = [[float(row["lr/body"]), float(row["lr/head"])] for row in rows]
    assert len(logged) == len(model.used_lrs) >= 6
    assert logged == [pytest.approx(used) for used in model.used_lrs]
    assert logged[0][0] < logged[6][0]  # the warmup shows


class _TaskModule(LightningModule):
    """A module of another task: its test step calls ``self(x)``, whose raw outputs the report reads."""

    def __init__(self, task: str, outputs: int, **facts) -> None:
        super().__init__()
        self.task = task
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, outputs))
        for name, value in facts.items():
            setattr(self, name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def test_step(self, batch, batch_idx):
        self.log("test_out", self(batch[0]).mean())


def _task_loader(targets: torch.Tensor) -> DataLoader:
    x = torch.randn(len(targets), 3, 8, 8, generator=torch.Generator().manual_seed(5))
    return DataLoader(TensorDataset(x, targets), batch_size=5)


def test_multilabel_test_reports_average_precision_per_label(tmp_path: Path) -> None:
    from sklearn.metrics import average_precision_score

    targets = (torch.rand(20, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    targets[:, 2] = 0  # a label without positives in the test split: no AP, not a crash
    model = _TaskModule("multilabel", 3, class_names=["cat", "dog", "owl"]).eval()
    loader = _task_loader(targets)
    report = RunReport(output_dir=tmp_path, summary=True)
    _trainer(tmp_path, report, logger=False, callbacks=[report]).test(model, loader)
    with torch.no_grad():
        scores = torch.cat([model(x) for x, _ in loader]).sigmoid()
    for j, name in enumerate(["cat", "dog"]):
        expected = average_precision_score(targets[:, j].numpy(), scores[:, j].numpy())
        assert report.label_ap[name] == pytest.approx(expected, abs=1e-6)
    assert report.label_ap["owl"] != report.label_ap["owl"]  # NaN
    rows = _rows(tmp_path / "label_ap.csv")
    assert [r["label"] for r in rows] == ["cat", "dog", "owl"] and rows[2]["average_precision"] == ""
    assert [int(r["positives"]) for r in rows] == targets.sum(0).long().tolist()
    assert report.confusion is None and not (tmp_path / "confusion_matrix.csv").exists()


def test_regression_test_reports_errors_in_original_units(tmp_path: Path) -> None:
    stats = {"mean": [50.0], "std": [10.0]}
    targets = torch.randn(15, 1, generator=torch.Generator().manual_seed(2))  # standardised, as the data gives them
    model = _TaskModule("regression", 1, target_stats=stats, target_names=["age"]).eval()
    loader = _task_loader(targets)
    report = RunReport(output_dir=tmp_path, summary=False)
    _trainer(tmp_path, report, logger=False, callbacks=[report]).test(model, loader)
    with torch.no_grad():
        predicted = torch.cat([model(x) for x, _ in loader])[:, 0].double() * 10 + 50
    true = targets[:, 0].double() * 10 + 50
    [row] = report.regression
    assert row["target"] == "age" and row["samples"] == 15
    assert row["mae"] == pytest.approx(float((predicted - true).abs().mean()), rel=1e-5)
    assert row["rmse"] == pytest.approx(float((predicted - true).pow(2).mean().sqrt()), rel=1e-5)
    r2 = 1 - float((predicted - true).pow(2).sum() / (true - true.mean()).pow(2).sum())
    assert row["r2"] == pytest.approx(r2, rel=1e-5)
    assert _rows(tmp_path / "regression.csv")[0]["target"] == "age"
    assert (tmp_path / "predicted_vs_true.png").stat().st_size > 0


def test_binary_confusion_matrix_uses_the_model_threshold(tmp_path: Path) -> None:
    targets = torch.arange(20) % 2
    model = _TaskModule("binary", 1, thresholds=[0.7], class_names=["no", "yes"]).eval()
    nn.init.constant_(model.net[1].bias, 0.4)  # probabilities around 0.6: the threshold decides many
    loader = _task_loader(targets)
    report = RunReport(output_dir=tmp_path, summary=False)
    _trainer(tmp_path, report, logger=False, callbacks=[report]).test(model, loader)
    with torch.no_grad():
        probs = torch.cat([model(x) for x, _ in loader])[:, 0].sigmoid()
    predicted = (probs >= 0.7).long()
    assert not torch.equal(predicted, (probs >= 0.5).long())
    expected = torch.zeros(2, 2, dtype=torch.long)
    for t, p in zip(targets, predicted):
        expected[t, p] += 1
    assert torch.equal(report.confusion, expected)
    assert _rows(tmp_path / "confusion_matrix.csv")[1]["true/predicted"] == "yes"


def test_a_model_that_logs_label_ap_is_not_computed_twice(tmp_path: Path) -> None:
    """The report takes a multi-label TransferClassifier's own `test_ap_<label>`: one AP computation per label."""
    targets = (torch.rand(20, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    targets[:, 2] = 0
    x = torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, task="multilabel", class_names=["cat", "dog", "owl"]
    )
    report = RunReport(output_dir=tmp_path, summary=False)
    trainer = _trainer(tmp_path, report, logger=False, callbacks=[report])
    trainer.test(model, DataLoader(TensorDataset(x, targets), batch_size=5))
    assert report._test_confusion.ap is None  # only positives were counted
    for name in ("cat", "dog"):
        assert report.label_ap[name] == pytest.approx(float(trainer.callback_metrics[f"test_ap_{name}"]))
    assert report.label_ap["owl"] != report.label_ap["owl"]  # NaN: no positives
    rows = _rows(tmp_path / "label_ap.csv")
    assert [int(r["positives"]) for r in rows] == targets.sum(0).long().tolist()


def _fit_task(tmp_path: Path, model: LightningModule, data) -> RunReport:
    from task_helpers import fit_trainer

    report = RunReport(output_dir=tmp_path, summary=False)
    fit_trainer(tmp_path, 2, [report], limit_train_batches=2).fit(model, datamodule=data)
    return report


def _epoch_values(tmp_path: Path, name: str) -> list[float]:
    return [float(row[name]) for row in _rows(tmp_path / "epochs.csv") if row.get(name)]


def test_multilabel_curves_show_val_map(tmp_path: Path) -> None:
    """The learning curves show the metric best.ckpt is chosen by (MONITOR), not the loss alone."""
    from task_helpers import LABELS, TaskData

    from lit_transfer.tasks import MONITOR

    model = TransferClassifier("test_resnet", num_classes=3, class_names=LABELS, pretrained=False, task="multilabel")
    report = _fit_task(tmp_path, model, TaskData("multilabel"))
    assert MONITOR["multilabel"][0] == "val_map" and report.curves == ["loss", "map"]
    assert (tmp_path / "learning_curves.png").is_file() and len(_epoch_values(tmp_path, "val_map")) == 2


def test_regression_curves_show_val_mae_and_each_targets_mae(tmp_path: Path) -> None:
    """Two targets in different units: ``val_mae`` mixes them, so each target's MAE is logged and plotted too."""
    from task_helpers import TARGETS, TaskData

    from lit_transfer import TransferRegressor

    data = TaskData("regression")
    model = TransferRegressor(
        "test_resnet", num_outputs=2, pretrained=False, target_names=TARGETS, target_stats=data.target_stats
    )
    report = _fit_task(tmp_path, model, data)
    assert report.curves == ["loss", "mae", *(f"mae_{t}" for t in TARGETS)]
    overall, per_target = _epoch_values(tmp_path, "val_mae"), [_epoch_values(tmp_path, f"val_mae_{t}") for t in TARGETS]
    assert len(overall) == 2 and all(len(values) == 2 for values in per_target)
    for epoch, value in enumerate(overall):  # the same number of values per target: the overall MAE is their mean
        assert value == pytest.approx(sum(values[epoch] for values in per_target) / len(TARGETS), rel=1e-4)
    assert per_target[0] != per_target[1]


def test_classifier_curves_keep_loss_and_accuracy(tmp_path: Path) -> None:
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    report = RunReport(output_dir=tmp_path, summary=False)
    _trainer(tmp_path, report, limit_train_batches=2).fit(model, _loader(), _loader(seed=1))
    assert report.curves == ["loss", "acc"]
