"""The lit-transfer CLI: short names, links, defaults that recipes cannot drop, resume, errors that name the file."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import RECIPES
from cli_helpers import TINY as TINY_RUN
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from photo_fixture import make_photo_folder

from lit_transfer import LRScaling, TransferClassifier
from lit_transfer.backbones import backbone_data_config
from lit_transfer.callbacks import ExceptionCheckpoint
from lit_transfer.cli import TransferCLI
from lit_transfer.cli.run_files import find_last_checkpoint
from lit_transfer.data.decode import BadImageError

DEFAULTS = ["--config", str(RECIPES / "defaults.yaml")]
TINY = [*TINY_RUN, "--data.classes=[0, 1, 2]", "--data.batch_size=8"]


def _cli(tmp_path: Path, *extra: str, subcommand: str | None = None) -> TransferCLI:
    args = [*DEFAULTS, *TINY, f"--trainer.default_root_dir={tmp_path}", *extra]
    if subcommand is None:
        return TransferCLI(args=args, run=False)
    return TransferCLI(args=[subcommand, *args])


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


class NoConfigDataModule(LightningDataModule):
    """A DataModule without the `data_config` argument the CLI links into."""

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size


def test_short_names_and_links(tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    assert isinstance(cli.model, TransferClassifier)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes == 3
    assert cli.model.class_names == ["0", "1", "2"]
    assert cli.model.backbone.get_classifier().out_features == 3
    assert cli.datamodule.data_config == backbone_data_config("test_resnet")


def test_overlay_without_init_args_and_policy_name(tmp_path: Path) -> None:
    overlay = _write(tmp_path / "overlay.yaml", {"model": {"freeze": "linear_probe"}, "data": {"batch_size": 4}})
    cli = _cli(tmp_path, "--config", str(overlay))
    assert cli.model.policy.name == "linear_probe"
    assert cli.datamodule.batch_size == 4


def test_num_classes_mismatch_names_values_and_file(tmp_path: Path) -> None:
    overlay = _write(tmp_path / "bad_classes.yaml", {"model": {"init_args": {"num_classes": 7}}})
    with pytest.raises(ValueError, match=r"num_classes.*7.*bad_classes\.yaml.*3 classes"):
        _cli(tmp_path, "--config", str(overlay))
    with pytest.raises(ValueError, match=r"7.*command line `--model.num_classes`.*3 classes"):
        _cli(tmp_path, "--model.num_classes=7")


def test_num_classes_matching_the_data_is_accepted(tmp_path: Path) -> None:
    assert _cli(tmp_path, "--model.num_classes=3").model.hparams.num_classes == 3


def test_unknown_key_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overlay = _write(tmp_path / "typo.yaml", {"model": {"init_args": {"layer_decya": 0.8}}})
    with pytest.raises(SystemExit):
        _cli(tmp_path, "--config", str(overlay))
    err = capsys.readouterr().err
    assert "layer_decya" in err


def test_unknown_class_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overlay = _write(tmp_path / "cls.yaml", {"data": {"class_path": "NoSuchDataModule"}})
    with pytest.raises(SystemExit):
        _cli(tmp_path, "--config", str(overlay))
    assert "NoSuchDataModule" in capsys.readouterr().err


def test_missing_recipe_file_names_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli(tmp_path, "--config", str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in capsys.readouterr().err


def test_data_module_without_data_config_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"NoConfigDataModule has no `data_config`"):
        _cli(tmp_path, f"--data={__name__}.NoConfigDataModule")


def test_defaults_survive_a_recipe_callback_list(tmp_path: Path) -> None:
    cli = _cli(tmp_path, "--config", str(RECIPES / "large_batch.yaml"), "--data.batch_size=8")
    kinds = [type(c) for c in cli.trainer.callbacks]
    assert LRScaling in kinds
    assert any(isinstance(c, ModelCheckpoint) for c in cli.trainer.callbacks)
    assert any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks)
    assert any(isinstance(c, ExceptionCheckpoint) for c in cli.trainer.callbacks)
    # Lightning resumes every later fit from an OnExceptionCheckpoint's file by itself: the CLI must not add one
    assert not any(isinstance(c, OnExceptionCheckpoint) for c in cli.trainer.callbacks)
    best, last = cli.trainer.checkpoint_callbacks
    assert (best.monitor, best.mode, best.filename, best.save_top_k) == ("val_acc", "max", "best", 1)
    assert (last.monitor, last.filename, last.save_top_k) == (None, "last", 1)
    loggers = cli.trainer.loggers
    assert {type(lg) for lg in loggers} == {CSVLogger, TensorBoardLogger}
    assert loggers[0].log_dir == loggers[1].log_dir


def test_explicit_checkpoint_callback_is_not_duplicated(tmp_path: Path) -> None:
    custom = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val_loss"}}
    overlay = _write(tmp_path / "ckpt.yaml", {"trainer": {"callbacks": [custom]}})
    cli = _cli(tmp_path, "--config", str(overlay))
    checkpoints = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(checkpoints) == 1 and checkpoints[0].monitor == "val_loss"


def test_fit_then_resume_from_last(tmp_path: Path) -> None:
    first = _cli(tmp_path, subcommand="fit")
    assert first.config.fit.weights_only is True
    run_dir = Path(first.trainer.log_dir)
    for name in ("config.yaml", "metrics.csv", "hparams.yaml"):
        assert (run_dir / name).is_file(), name
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())[
        "trainer"
    ]  # every option the run used, not help's few
    assert saved["limit_train_batches"] == 2 and saved["enable_progress_bar"] is False
    assert list(run_dir.glob("events.out.tfevents.*"))
    last = find_last_checkpoint(tmp_path)
    assert last is not None and last.parent == run_dir / "checkpoints"
    assert torch.load(last, weights_only=True)["hyper_parameters"]["num_classes"] == 3  # plain values only
    steps = first.trainer.global_step

    resumed = _cli(tmp_path, "--ckpt_path=last", "--trainer.max_epochs=2", subcommand="fit")
    assert resumed.config.fit.ckpt_path == str(last)
    assert resumed.trainer.global_step == 2 * steps  # continued, not restarted
    assert Path(resumed.trainer.log_dir) != run_dir  # a new version directory, the first run untouched
    assert (Path(resumed.trainer.log_dir) / "config.yaml").is_file()


def test_validate_from_checkpoint_file_rebuilds_model(tmp_path: Path) -> None:
    _cli(tmp_path, "--model.freeze=linear_probe", subcommand="fit")
    ckpt = find_last_checkpoint(tmp_path)
    cli = _cli(tmp_path, f"--ckpt_path={ckpt}", subcommand="validate")
    assert cli.model.policy.name == "linear_probe"
    assert cli.model.hparams.pretrained is False


def test_precision_16_on_cpu_prints_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        cli = _cli(tmp_path, "--trainer.precision=16-mixed", "--trainer.accelerator=cpu")
    assert cli.trainer.precision == "bf16-mixed"
    assert any("runs as 'bf16-mixed'" in r.getMessage() for r in caplog.records)


def test_print_config_and_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lit_transfer", "fit", *DEFAULTS, *TINY, "--print_config"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"].endswith("TransferClassifier")
    assert config["data"]["class_path"].endswith("DigitsDataModule")
    assert config["model"]["init_args"]["backbone"] == "test_resnet"


def test_last_checkpoint_is_the_newest_epoch_even_when_val_acc_stalls(tmp_path: Path) -> None:
    """Lightning rewrites a monitored checkpoint's `last.ckpt` only when the score improves; ours every epoch."""
    cli = _cli(tmp_path, "--trainer.max_epochs=3", "--model.optimizer.init_args.lr=0.0", subcommand="fit")
    checkpoints = Path(cli.trainer.log_dir) / "checkpoints"
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0  # LR 0: val_acc never improves after the first epoch
    assert last["epoch"] == 2 and last["global_step"] == cli.trainer.global_step


def test_a_failed_setup_leaves_no_checkpoint_that_a_later_fit_would_resume(tmp_path: Path) -> None:
    """An error before training writes nothing; the next plain fit starts afresh (no `Restoring states`)."""
    photos = make_photo_folder(tmp_path / "photos", per_class=3, val_per_class=1, test_per_class=0, predict=0)
    data = ["--data=ImageFolderDataModule", f"--data.root={photos}", "--data.num_workers=0", "--data.image_size=32"]
    with pytest.raises(BadImageError, match=r"broken\.jpg"):  # raised in the DataModule's setup, inside fit
        _cli(tmp_path, *data, subcommand="fit")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(Path.cwd().glob("on_exception.ckpt"))
    fresh = _cli(tmp_path, *data, "--data.on_bad_image=skip", subcommand="fit")
    assert fresh.trainer.global_step == 2 and fresh.trainer.current_epoch == 1  # one epoch of two batches, from 0


def test_exception_checkpoint_refuses_a_file_name_with_folders() -> None:
    with pytest.raises(ValueError, match=r"`filename` must be a plain file name.*'runs/x'"):
        ExceptionCheckpoint(filename="runs/x")
    assert ExceptionCheckpoint().filename == "on_exception"


def test_a_folder_named_like_a_subcommand_alias_keeps_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the subcommand token `lr-find` is respelled, never an option's value."""
    monkeypatch.chdir(tmp_path)
    cli = TransferCLI(args=[*DEFAULTS, *TINY, "--trainer.default_root_dir", "lr-find"], run=False)
    assert Path(cli.trainer.default_root_dir).name == "lr-find"


def test_a_dict_of_arguments_ignores_the_host_process_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks that read 'what was typed' see nothing typed for dict arguments, not the host's sys.argv."""
    monkeypatch.setattr(sys, "argv", ["host", "--model.num_classes", "7", "--model.backbone", "resnet50"])
    config = yaml.safe_load((RECIPES / "defaults.yaml").read_text())
    config["model"]["init_args"].update(backbone="test_resnet", pretrained=False)
    config["data"]["init_args"].update(classes=[0, 1, 2], batch_size=8)
    config["trainer"].update(default_root_dir=str(tmp_path), max_epochs=1, enable_progress_bar=False)
    cli = TransferCLI(args=config, run=False)
    assert cli.model.hparams["num_classes"] == 3 and cli.model.hparams["backbone"] == "test_resnet"
    assert sys.argv[1:] == ["--model.num_classes", "7", "--model.backbone", "resnet50"]
