"""Every recipe parses, builds named param groups with the LRs it writes, fits a few batches offline and reloads."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cli_helpers import RECIPES, TINY
from lightning.pytorch.callbacks import Callback

from lit_transfer import GroupLRFinder, TransferClassifier
from lit_transfer.cli import TransferCLI
from lit_transfer.data import DigitsDataModule
from lit_transfer.demo.canvases import write_canvases
from lit_transfer.models import TransferRegressor

TASK_RECIPES = ("multilabel.yaml", "regression.yaml")  # on the digit canvases: test_task_recipe_fits_and_reloads
SPACES = ("tune_space.yaml",)  # search spaces, not configs: tests/e2e/test_tune_cli.py runs `lit-transfer tune` on them
SEGMENTATION = ("segmentation.yaml",)  # on the digit-mask canvases: tests/e2e/test_segmentation_cli.py
SKIPPED = ("defaults.yaml", *TASK_RECIPES, *SPACES, *SEGMENTATION)
OVERLAYS = sorted(p.name for p in RECIPES.glob("*.yaml") if p.name not in SKIPPED)
DIGITS = ["--data.class_path=DigitsDataModule", "--data.image_size=32", "--data.batch_size=8"]
OVERRIDES: dict[str, list[str]] = {
    "multi_gpu.yaml": ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"],
    "large_batch.yaml": ["--data.batch_size=16"],
    "auto.yaml": ["--trainer.max_epochs=2", "--model.freeze.probe_epochs=1"],  # reach the decision
}


def _recipe_lr(name: str) -> float:
    """The optimizer LR a recipe writes (else the defaults')."""
    for path in (RECIPES / name, RECIPES / "defaults.yaml"):
        model = yaml.safe_load(path.read_text()).get("model") or {}
        optimizer = (model.get("init_args") or {}).get("optimizer")
        if optimizer:
            return float(optimizer["init_args"]["lr"])
    raise AssertionError("no optimizer LR in the recipes")


class GroupProbe(Callback):
    """Records the optimizer's param groups when training starts."""

    def __init__(self) -> None:
        self.groups: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0]
        self.groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "ids": [id(p) for p in g["params"]]}
            for g in optimizer.param_groups
        ]


def _args(name: str, root: Path, data_args: list[str]) -> list[str]:
    return [
        "--config",
        str(RECIPES / "defaults.yaml"),
        "--config",
        str(RECIPES / name),
        *TINY,
        f"--trainer.default_root_dir={root}",
        *data_args,
        *OVERRIDES.get(name, []),
    ]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("my_images")
    DigitsDataModule(classes=[0, 1, 2], image_size=16, val_fraction=0.5, test_fraction=0.5).write_image_folder(root)
    return root


@pytest.mark.parametrize("name", OVERLAYS)
def test_recipe_parses_fits_and_reloads(name: str, tmp_path: Path, image_root: Path) -> None:
    data_args = [f"--data.root={image_root}", "--data.image_size=32", "--data.batch_size=8", "--data.num_workers=0"]
    if name != "my_images.yaml":
        data_args = DIGITS if name != "quickstart.yaml" else DIGITS[1:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = TransferCLI(args=_args(name, tmp_path, data_args), run=False)
    assert not [w for w in caught if "will be overridden" in str(w.message)]
    model, datamodule = cli.model, cli.datamodule
    assert isinstance(model, TransferClassifier)
    assert model.backbone.get_classifier().out_features == datamodule.num_classes
    assert model.class_names == datamodule.class_names
    assert type(model).configure_optimizers is TransferClassifier.configure_optimizers

    probe = GroupProbe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(model, datamodule=datamodule)
    assert cli.trainer.global_step > 0

    ids = [i for g in probe.groups for i in g["ids"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    assert all(g.get("name") for g in probe.groups)
    head = next(g for g in probe.groups if g["name"] == "head")
    finder = next((c for c in cli.trainer.callbacks if isinstance(c, GroupLRFinder)), None)
    assert (finder is not None) == (name == "auto.yaml")  # the recipe that configures an LR range test
    expected = finder.result.suggestion if finder is not None and finder.result is not None else _recipe_lr(name)
    assert head.get("initial_lr", head["lr"]) == pytest.approx(expected)  # a range test's suggestion, if one ran

    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert torch.load(last, weights_only=True)["global_step"] == cli.trainer.global_step  # the newest step
    reloaded = TransferClassifier.load_from_checkpoint(last)
    assert reloaded.backbone.get_classifier().out_features == datamodule.num_classes
    assert reloaded.class_names == datamodule.class_names
    assert reloaded.state_dict().keys() == model.state_dict().keys()


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_canvases(tmp_path_factory.mktemp("canvases"), train=16, val=8, test=8, cell=16)


@pytest.mark.parametrize("name", TASK_RECIPES)
def test_task_recipe_fits_and_reloads(name: str, tmp_path: Path, canvases: dict[str, Path]) -> None:
    tables = [f"--data.{split}_csv={path}" for split, path in canvases.items()]
    data_args = [*tables, "--data.image_size=32", "--data.batch_size=8", "--data.num_workers=0"]
    cli = TransferCLI(args=_args(name, tmp_path, data_args), run=False)
    model, datamodule = cli.model, cli.datamodule
    if name == "multilabel.yaml":
        assert isinstance(model, TransferClassifier) and model.task == datamodule.task == "multilabel"
        assert model.class_names == datamodule.class_names == ["5", "6", "7", "8", "9"]
        assert model.backbone.get_classifier().out_features == 5
    else:
        assert isinstance(model, TransferRegressor) and datamodule.task == "regression"
        assert model.hparams.target_names == ["sum"] and model.hparams.target_stats == datamodule.target_stats
        assert model.backbone.get_classifier().out_features == 1
    cli.trainer.fit(model, datamodule=datamodule)
    assert cli.trainer.global_step > 0
    checkpoints = Path(cli.trainer.log_dir) / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file()
    reloaded = type(model).load_from_checkpoint(checkpoints / "last.ckpt")
    public = {k: v for k, v in model.hparams.items() if not k.startswith("_")}  # not the CLI's instantiator notes
    assert {k: reloaded.hparams[k] for k in public} == public and set(reloaded.hparams) <= set(model.hparams)
    assert reloaded.state_dict().keys() == model.state_dict().keys()


def test_defaults_alone_parse(tmp_path: Path) -> None:
    cli = TransferCLI(
        args=["--config", str(RECIPES / "defaults.yaml"), *TINY, f"--trainer.default_root_dir={tmp_path}"], run=False
    )
    assert cli.model.hparams.num_classes == 10 == cli.datamodule.num_classes


@pytest.mark.parametrize("name", [*OVERLAYS, *TASK_RECIPES, *SPACES, *SEGMENTATION, "defaults.yaml"])
def test_recipe_is_documented(name: str) -> None:
    head = (RECIPES / name).read_text().splitlines()[:12]
    text = "\n".join(head)
    assert head[0].startswith(f"# {name}")
    for word in ("What:", "When:", "How:"):
        assert word in text, f"{name} lacks a `{word}` line in its header comment"


@pytest.mark.parametrize("name", SPACES)
def test_space_recipe_is_run_by_the_tune_tests(name: str) -> None:
    from lit_transfer.tuner.space import load_space

    assert load_space(RECIPES / name).params  # a valid space; the tune tests run it on the digits
    tune_tests = (Path(__file__).parent / "test_tune_cli.py").read_text()
    assert f'"recipes" / "{name}"' in tune_tests
