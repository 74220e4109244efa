"""The bad-input matrix: one case per mistake a user can make, with the exact message they get.

Each case is checked here, and ``docs/errors.md`` shows every message verbatim (temporary paths shortened to
``<tmp>``). After changing a message, regenerate the page with ``python tests/e2e/test_bad_inputs.py``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO / "docs" / "errors.md"
sys.path.insert(0, str(Path(__file__).parents[1]))

from freeze_helpers import PlainModule, fixed_data, loader, trainer  # noqa: E402


@dataclass(frozen=True)
class Case:
    area: str
    id: str
    what: str
    action: Callable[[Path], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


def _classifier(**kwargs):
    from lit_transfer import TransferClassifier

    kwargs.setdefault("pretrained", False)
    return TransferClassifier(kwargs.pop("backbone", "test_resnet"), num_classes=kwargs.pop("num_classes", 3), **kwargs)


def _png(path: Path, value: int = 128, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def _folder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    for name in classes:
        for i in range(per_class):
            _png(root / "train" / name / f"{i}.png", 40 * i)
    return root


def _table(tmp: Path, rows: str, name: str = "train.csv", **options):
    """A CSVDataModule on ``rows`` (a CSV body under a ``path,tags`` header) of three tiny images."""
    from lit_transfer.data import CSVDataModule

    for i in range(3):
        _png(tmp / f"{i}.png", 60 * i)
    (tmp / name).write_text("path,tags\n" + rows)
    if name != "train.csv":
        options[name.replace(".csv", "_csv")] = tmp / name
        (tmp / "train.csv").write_text("path,tags\n0.png,cat\n1.png,cat|dog\n2.png,dog\n")
    return CSVDataModule(tmp / "train.csv", label_column="tags", **options)


def _canvas_cli(tmp: Path, *args: str):
    tables = __import__("lit_transfer.demo.canvases").demo.canvases.write_canvases(tmp, 6, 2, 2, cell=16)
    data = ["--data", "CSVDataModule", "--data.train_csv", str(tables["train"]), "--data.image_size", "32"]
    return _cli("--config", DEFAULTS, *data, *args)


def _weights_of(name: str, path: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}, str(path))
    return path


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _evil(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"x": _Payload()}}, path)
    return path


def _checkpoint(tmp: Path, **kwargs) -> Path:
    model = _classifier(**kwargs)
    t = trainer(tmp, 1)
    t.fit(model, loader(fixed_data(n=8)))
    t.save_checkpoint(tmp / "model.ckpt")
    return tmp / "model.ckpt"


def _fit(tmp: Path, callbacks, model=None, **trainer_kwargs):
    return trainer(tmp, trainer_kwargs.pop("max_epochs", 2), callbacks, **trainer_kwargs).fit(
        model or _classifier(), loader(fixed_data(n=8))
    )


def _cli(*args: str):
    from lit_transfer.cli import TransferCLI

    return TransferCLI(args=list(args), run=False, parser_kwargs={"exit_on_error": False})


def _yaml(tmp: Path, content: dict) -> str:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _offline_hub(tmp: Path):
    import huggingface_hub.constants

    old = huggingface_hub.constants.HF_HUB_CACHE
    huggingface_hub.constants.HF_HUB_CACHE = str(tmp / "empty-cache")
    try:
        return _classifier(backbone="resnet10t", pretrained=True)
    finally:
        huggingface_hub.constants.HF_HUB_CACHE = old


class _ManualModule(PlainModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.batch_size = 4

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()


class _BatchModule(PlainModule):
    batch_size = 4


class _FilteredOptimizer(PlainModule):
    """The usual optimizer line of projects written for Lightning's BackboneFinetuning."""

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


def _callbacks():
    from lit_transfer import callbacks

    return callbacks


DEFAULTS = str(REPO / "recipes" / "defaults.yaml")


def _fit_on_digits(tmp: Path, num_classes: int, model=None) -> None:
    import lightning as L

    from lit_transfer.data import DigitsDataModule

    data = DigitsDataModule(classes=[0, 1, 2, 3, 4], shots_per_class=2, batch_size=4, image_size=16)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    trainer.fit(model or _classifier(num_classes=num_classes), datamodule=data)


def _regressor(**kwargs):
    from lit_transfer import TransferRegressor

    return TransferRegressor("test_resnet", pretrained=False, **kwargs)


def _seg_data(tmp: Path, fault: str, **options):
    from segmentation_fixture import broken_folder

    from lit_transfer.data import SegmentationFolderDataModule

    data = SegmentationFolderDataModule(broken_folder(tmp / "masks", fault), image_size=32, num_workers=0, **options)
    data.setup("fit")
    return data


def _segmenter(**kwargs):
    from lit_transfer import TransferSegmenter

    return TransferSegmenter(kwargs.pop("backbone", "test_resnet"), num_classes=3, pretrained=False, **kwargs)


def _fpn_on_48px(tmp: Path):
    from segmentation_fixture import make_segmentation_folder

    from lit_transfer.data import SegmentationFolderDataModule

    data = SegmentationFolderDataModule(make_segmentation_folder(tmp, 3, 1, 0, 0), image_size=48, num_workers=0)
    _segmenter(decoder="fpn", decoder_channels=64).check_data(data, "fit")


def _classifier_on_masks(tmp: Path):
    from segmentation_fixture import make_segmentation_folder

    root = make_segmentation_folder(tmp / "masks", 3, 1, 0, 0)
    return _cli("--config", DEFAULTS, "--data", "SegmentationFolderDataModule", "--data.root", str(root))


CASES = [
    # ---------------------------------------------------------------- models
    Case(
        "Models",
        "unknown-backbone",
        "A misspelt timm model name",
        lambda t: _classifier(backbone="resnt18"),
        ValueError,
        r"Unknown timm backbone 'resnt18'\. Did you mean 'resnet18'",
    ),
    Case(
        "Models",
        "unknown-policy",
        "A misspelt freezing policy",
        lambda t: _classifier(freeze="linear_prob"),
        ValueError,
        r"Unknown freezing policy 'linear_prob'\. Did you mean 'linear_probe'",
    ),
    Case(
        "Models",
        "num-classes-vs-data",
        "A model with another number of classes than its data (Python)",
        lambda t: _fit_on_digits(t, num_classes=3),
        ValueError,
        r"has 5 classes but the model was built with `num_classes=3`",
    ),
    Case(
        "Models",
        "layer-decay-range",
        "`layer_decay` outside (0, 1]",
        lambda t: _classifier(layer_decay=1.5),
        ValueError,
        r"`layer_decay` must be in \(0, 1\]",
    ),
    Case(
        "Models",
        "binary-num-classes",
        "A binary classifier with other than 2 classes",
        lambda t: _classifier(task="binary", num_classes=3),
        ValueError,
        r"`task='binary'` needs `num_classes=2`",
    ),
    Case(
        "Models",
        "multilabel-on-class-indices",
        "A multi-label classifier fed class indices (a multiclass DataModule)",
        lambda t: _fit_on_digits(t, 5, _classifier(num_classes=5, task="multilabel")),
        ValueError,
        r"multi-hot targets of shape \(N, 5\) .*got int64 .*`label_columns`",
    ),
    Case(
        "Models",
        "regressor-on-class-indices",
        "A regressor fed class indices (a classification DataModule)",
        lambda t: _fit_on_digits(t, 5, _regressor()),
        ValueError,
        r"float targets of shape \(N, 1\), got int64 .*`target_columns`",
    ),
    Case(
        "Models",
        "regressor-target-stats",
        "Regression `target_stats` with a zero or missing std",
        lambda t: _regressor(num_outputs=1, target_stats={"mean": [0.0], "std": [0.0]}),
        ValueError,
        r"`target_stats` must be .* with 1 number\(s\) each, every std positive",
    ),
    Case(
        "Models",
        "one-class",
        "Fewer than two classes",
        lambda t: _classifier(num_classes=1),
        ValueError,
        r"`num_classes` must be an integer >= 2, got 1",
    ),
    Case(
        "Models",
        "class-names-count",
        "`class_names` that disagree with `num_classes`",
        lambda t: _classifier(class_names=["a", "b"]),
        ValueError,
        r"`class_names` has 2 names but `num_classes` is 3",
    ),
    Case(
        "Models",
        "gradual-every-zero",
        "A policy argument out of range",
        lambda t: __import__("lit_transfer").GradualUnfreeze(every_n_epochs=0),
        ValueError,
        r"`every_n_epochs` must be a positive integer, got 0",
    ),
    Case(
        "Models",
        "surgical-unknown-group",
        "A surgical fine-tune of a group the model does not have",
        lambda t: _fit(t, [], model=_classifier(freeze={"policy": "surgical", "groups": ["layer9"]})),
        ValueError,
        r"SurgicalFineTune: the model has no layer group 'layer9'\. Did you mean 'layer4'\?"
        r" Its groups \(stem first\): 0='stem'",
    ),
    Case(
        "Models",
        "auto-probe-epochs",
        "`freeze: auto` without a linear-probe phase",
        lambda t: _classifier(freeze={"policy": "auto", "probe_epochs": 0}),
        ValueError,
        r"`probe_epochs` must be an integer >= 1 .* got 0",
    ),
    Case(
        "Models",
        "cache-needs-probe",
        "Feature caching with a trainable backbone",
        lambda t: _classifier(freeze="freeze_unfreeze", cache_features=True),
        ValueError,
        r"`cache_features=True` needs a frozen backbone",
    ),
    Case(
        "Models",
        "probe-views-count",
        "`probe_views` that is not a count",
        lambda t: _classifier(probe_views=-1),
        ValueError,
        r"`probe_views` must be an integer >= 0",
    ),
    Case(
        "Models",
        "probe-views-head",
        "`probe_views` with a head that is not one linear layer",
        lambda t: _classifier(backbone="levit_128s", probe_views=2),
        ValueError,
        r"`probe_views` fits a linear classifier .* Set `probe_views: 0`",
    ),
    # --------------------------------------------------------- weights, ckpts
    Case(
        "Weights and checkpoints",
        "weights-missing",
        "A weights file that does not exist",
        lambda t: _classifier(pretrained=str(t / "resnet.safetensors")),
        FileNotFoundError,
        r"Weights file '.*resnet\.safetensors' \(from `pretrained`\) does not exist",
    ),
    Case(
        "Weights and checkpoints",
        "weights-other-architecture",
        "Weights of another architecture",
        lambda t: _classifier(pretrained=str(_weights_of("test_convnext", t / "convnext.safetensors"))),
        __import__("lit_transfer.errors").errors.WeightsMismatchError,
        r"do not fit the backbone \(ResNet\):.*missing: conv1",
    ),
    Case(
        "Weights and checkpoints",
        "hub-offline",
        "Hub weights while offline, not in the cache",
        _offline_hub,
        __import__("lit_transfer.errors").errors.WeightsUnavailableError,
        r"Pretrained weights for 'resnet10t'.*pass a local weights file",
    ),
    Case(
        "Weights and checkpoints",
        "pickled-weights",
        "A weights file with pickled objects",
        lambda t: _classifier(pretrained=str(_evil(t / "evil.pth"))),
        __import__("lit_transfer.errors").errors.UnsafeFileError,
        r"evil\.pth' holds pickled Python objects .*it needs .*print",
    ),
    Case(
        "Weights and checkpoints",
        "pickled-checkpoint",
        "A checkpoint with pickled objects",
        lambda t: __import__("lit_transfer").TransferClassifier.load_from_checkpoint(_evil(t / "evil.ckpt")),
        __import__("lit_transfer.errors").errors.UnsafeFileError,
        r"evil\.ckpt' holds pickled Python objects",
    ),
    Case(
        "Weights and checkpoints",
        "checkpoint-other-head",
        "A checkpoint of another head size",
        lambda t: __import__("lit_transfer").TransferClassifier.load_from_checkpoint(_checkpoint(t), num_classes=5),
        __import__("lit_transfer.errors").errors.CheckpointMismatchError,
        r"does not fit this run's 'test_resnet' with 5 classes",
    ),
    # ------------------------------------------------------------------ data
    Case(
        "Data",
        "root-missing",
        "An image-folder root that does not exist",
        lambda t: __import__("lit_transfer.data").data.ImageFolderDataModule(t / "nowhere"),
        FileNotFoundError,
        r"`root` directory '.*nowhere' does not exist",
    ),
    Case(
        "Data",
        "no-train-folder",
        "A root without `train/`",
        lambda t: __import__("lit_transfer.data").data.ImageFolderDataModule(_png(t / "x.png").parent),
        FileNotFoundError,
        r"`root/train` directory '.*train' does not exist",
    ),
    Case(
        "Data",
        "single-class",
        "Only one class folder",
        lambda t: __import__("lit_transfer.data").data.ImageFolderDataModule(_folder(t, classes=("cat",))),
        ValueError,
        r"cat",
    ),
    Case(
        "Data",
        "empty-class",
        "An empty class folder",
        lambda t: (
            _folder(t),
            (t / "train" / "bird").mkdir(),
            __import__("lit_transfer.data").data.ImageFolderDataModule(t).setup("fit"),
        ),
        ValueError,
        r"bird",
    ),
    Case(
        "Data",
        "corrupt-images",
        "Unreadable images (zero bytes, truncated, not an image)",
        lambda t: (
            _folder(t),
            (t / "train" / "cat" / "empty.png").write_bytes(b""),
            (t / "train" / "dog" / "notes.jpg").write_text("not an image"),
            __import__("lit_transfer.data").data.ImageFolderDataModule(t, val_fraction=0).setup("fit"),
        ),
        ValueError,
        r"(?s)2 image file\(s\) cannot be decoded:.*empty\.png: empty file.*notes\.jpg.*on_bad_image='skip'",
    ),
    Case(
        "Data",
        "csv-label-unseen",
        "A validation label that training never had (multi-label)",
        lambda t: _table(t, "0.png,cat|bird\n", name="val.csv", label_delimiter="|"),
        ValueError,
        r"`val_csv` '.*val\.csv', row 1 \(line 2\), column 'tags': label 'bird' does not occur in `train_csv`",
    ),
    Case(
        "Data",
        "csv-empty-label-set",
        "A row without labels (multi-label)",
        lambda t: _table(t, "0.png,cat\n1.png,\n", label_delimiter="|"),
        ValueError,
        r"row 2 \(line 3\), column 'tags': the row has no label\..*`allow_empty_labels=True`",
    ),
    Case(
        "Data",
        "csv-not-a-number",
        "A regression target that is not a number",
        lambda t: _table(t, "0.png,1.5\n1.png,about 3\n", target_columns=["tags"]),
        ValueError,
        r"row 2 \(line 3\), column 'tags': 'about 3' is not a number",
    ),
    Case(
        "Data",
        "csv-nan-target",
        "A missing (NaN) regression target",
        lambda t: _table(t, "0.png,1.5\n1.png,NaN\n", target_columns=["tags"]),
        ValueError,
        r"row 2 \(line 3\), column 'tags': 'NaN' is not a finite number",
    ),
    Case(
        "Data",
        "csv-two-target-kinds",
        "Both label sets and regression targets",
        lambda t: _table(t, "0.png,1\n", label_delimiter="|", target_columns=["tags"]),
        ValueError,
        r"Pass only one of `label_delimiter`.*got `label_delimiter` and `target_columns`",
    ),
    Case(
        "Data",
        "csv-missing-column",
        "A CSV without the label column",
        lambda t: (
            (t / "train.csv").write_text("path,kind\na.png,cat\n"),
            __import__("lit_transfer.data").data.CSVDataModule(t / "train.csv"),
        ),
        ValueError,
        r"label",
    ),
    Case(
        "Data",
        "csv-missing-file",
        "A CSV that lists a file that does not exist",
        lambda t: (
            (t / "train.csv").write_text("path,label\nmissing.png,cat\nb.png,dog\n"),
            _png(t / "b.png"),
            __import__("lit_transfer.data").data.CSVDataModule(t / "train.csv").setup("fit"),
        ),
        FileNotFoundError,
        r"missing\.png",
    ),
    Case(
        "Data",
        "unknown-preset",
        "An unknown augmentation preset",
        lambda t: __import__("lit_transfer.data").data.DigitsDataModule(train_transform="strong"),
        ValueError,
        r"must be one of \['none', 'light', 'medium', 'heavy'\].*got 'strong'",
    ),
    Case(
        "Data",
        "totensor-first",
        "A YAML pipeline with `ToTensorV2` before `Normalize`",
        lambda t: __import__("lit_transfer.data").data.DigitsDataModule(
            train_transform=[
                {"class_path": "albumentations.pytorch.ToTensorV2"},
                {"class_path": "albumentations.Normalize"},
            ]
        ),
        ValueError,
        r"ToTensorV2",
    ),
    Case(
        "Data",
        "digits-bad-classes",
        "Digit classes outside 0-9",
        lambda t: __import__("lit_transfer.data").data.DigitsDataModule(classes=[3, 12]),
        ValueError,
        r"`classes` must be at least 2 distinct digits in 0-9, got \[3, 12\]",
    ),
    # ------------------------------------------------------------- callbacks
    Case(
        "Callbacks and Trainer settings",
        "lr-scaling-rule",
        "An unknown LR scaling rule",
        lambda t: _callbacks().LRScaling(rule="cubic"),
        ValueError,
        r"`rule` must be one of .*'cubic'",
    ),
    Case(
        "Callbacks and Trainer settings",
        "ramp-needs-reload",
        "A batch ramp without dataloader reloads",
        lambda t: _fit(t, [_callbacks().BatchSizeRamp(every_n_epochs=1)], model=_BatchModule()),
        ValueError,
        r"reload_dataloaders_every_n_epochs=1",
    ),
    Case(
        "Callbacks and Trainer settings",
        "ramp-past-max-epochs",
        "A ramp milestone after the last epoch",
        lambda t: _fit(
            t,
            [_callbacks().BatchSizeRamp(milestones={5: 2.0})],
            model=_BatchModule(),
            reload_dataloaders_every_n_epochs=1,
        ),
        ValueError,
        r"milestone 5 is past the last epoch",
    ),
    Case(
        "Callbacks and Trainer settings",
        "accumulate-manual-optimization",
        "An accumulation ramp on a manual-optimization module",
        lambda t: _fit(t, [_callbacks().BatchSizeRamp(every_n_epochs=1, mode="accumulate")], model=_ManualModule()),
        ValueError,
        r"manual optimization|automatic_optimization",
    ),
    Case(
        "Callbacks and Trainer settings",
        "swap-not-optimizer",
        "An optimizer swap to a class that is no optimizer",
        lambda t: _callbacks().OptimizerSwap("torch.nn.Linear", at_epoch=1),
        (ValueError, TypeError),
        r"Optimizer",
    ),
    Case(
        "Callbacks and Trainer settings",
        "swap-no-trigger",
        "An optimizer swap without a trigger",
        lambda t: _callbacks().OptimizerSwap("torch.optim.SGD"),
        ValueError,
        r"Set exactly one trigger of `at_epoch`, `at_step`, `criterion`",
    ),
    Case(
        "Callbacks and Trainer settings",
        "freezing-deepspeed",
        "Partial freezing under DeepSpeed or FSDP",
        lambda t: (
            _callbacks()
            .LayerFreezing("freeze_unfreeze")
            ._check_strategy(
                type(
                    "T",
                    (),
                    {
                        "strategy": __import__(
                            "lightning.pytorch.strategies", fromlist=["x"]
                        ).DeepSpeedStrategy.__new__(
                            __import__("lightning.pytorch.strategies", fromlist=["x"]).DeepSpeedStrategy
                        )
                    },
                )()
            )
        ),
        ValueError,
        r"not DeepSpeedStrategy",
    ),
    Case(
        "Callbacks and Trainer settings",
        "optimizer-leaves-out-frozen",
        "An optimizer over the trainable parameters only (`filter(lambda p: p.requires_grad, ...)`)",
        lambda t: _fit(t, [_callbacks().LayerFreezing("freeze_unfreeze")], model=_FilteredOptimizer()),
        ValueError,
        r"optimizer",
    ),
    Case(
        "Callbacks and Trainer settings",
        "missing-backbone-attr",
        "LayerFreezing on a module without `backbone`",
        lambda t: _fit(t, [_callbacks().LayerFreezing("linear_probe", backbone_attr="encoder")], model=PlainModule()),
        AttributeError,
        r"PlainModule\.encoder",
    ),
    # ------------------------------------------------------------------- CLI
    Case(
        "Command line and recipes",
        "cli-unknown-key",
        "A misspelt key in a YAML file",
        lambda t: _cli("--config", DEFAULTS, "--config", _yaml(t, {"model": {"init_args": {"backbon": "x"}}})),
        Exception,
        r"recipe\.yaml \(the 2nd --config\): `model\.init_args\.backbon` is not an argument of TransferClassifier\. "
        r"Did you mean `model\.init_args\.backbone`\?",
    ),
    Case(
        "Command line and recipes",
        "cli-missing-recipe",
        "A recipe path that does not exist",
        lambda t: _cli("--config", str(t / "recipes" / "nope.yaml")),
        Exception,
        r"File does not exist: '.*nope\.yaml'",
    ),
    Case(
        "Command line and recipes",
        "cli-unknown-recipe-name",
        "A recipe name that no file here and no shipped recipe has",
        lambda t: _cli("--config", "recipes/fine_tuning.yaml"),
        Exception,
        r"`--config recipes/fine_tuning\.yaml`: no such file in this folder, and no recipe of that name ships with the"
        r" package\. Did you mean `recipes/fine_tune\.yaml`\?",
    ),
    Case(
        "Command line and recipes",
        "cli-unknown-class",
        "An unknown class name in YAML",
        lambda t: _cli("--config", DEFAULTS, "--data", "FolderOfDreams"),
        Exception,
        r"FolderOfDreams",
    ),
    Case(
        "Command line and recipes",
        "cli-task-multilabel",
        "Multi-label data with a multiclass model",
        lambda t: _canvas_cli(t, "--data.label_column", "digits", "--data.label_delimiter", "|"),
        ValueError,
        r"a set of labels \(multi-label\), but the model's `task` is 'multiclass'\. Set `task: multilabel` "
        r"\(`--model\.task multilabel`",
    ),
    Case(
        "Command line and recipes",
        "cli-task-regression",
        "Regression targets with a classifier",
        lambda t: _canvas_cli(t, "--data.target_columns", "[sum]"),
        ValueError,
        r"holds regression targets, but the model classifies \(`task` .multiclass.\)\. Use `TransferRegressor`",
    ),
    Case(
        "Command line and recipes",
        "cli-num-classes-disagree",
        "`model.num_classes` that disagrees with the data",
        lambda t: _cli("--config", DEFAULTS, "--model.num_classes", "7"),
        ValueError,
        r"`model\.num_classes` is 7 \(command line `--model\.num_classes`\) but the data \(DigitsDataModule\) has 10",
    ),
    # ---------------------------------------------------------------- segmentation
    Case(
        "Segmentation",
        "seg-missing-mask",
        "An image without its mask",
        lambda t: _seg_data(t, "missing"),
        FileNotFoundError,
        r"1 image\(s\) of '.*train/images' have no mask; each image <name>\.<ext> needs '.*train/masks/<name>\.png'",
    ),
    Case(
        "Segmentation",
        "seg-mask-size",
        "A mask of another size than its image",
        lambda t: _seg_data(t, "size"),
        ValueError,
        r"1 train mask\(s\) cannot be used:\n.*train_001\.png: 200x75 px, but its image is 200x150 px",
    ),
    Case(
        "Segmentation",
        "seg-class-out-of-range",
        "A class index the classes file does not name",
        lambda t: _seg_data(t, "range"),
        ValueError,
        r"train_001\.png: class index 7 out of range \(0\.\.2, or 255 = ignore\)",
    ),
    Case(
        "Segmentation",
        "seg-colour-mask",
        "A colour mask where class indices are expected",
        lambda t: _seg_data(t, "colour"),
        ValueError,
        r"(?s)train_001\.png: is a colour image \(RGB, 2 distinct colours\).*To convert colour masks, map each colour",
    ),
    Case(
        "Segmentation",
        "seg-one-class",
        "Masks that hold a single class",
        lambda t: _seg_data(t, "one_class"),
        ValueError,
        r"hold only the class indices \[0\] .*a segmentation needs at least 2 classes",
    ),
    Case(
        "Segmentation",
        "seg-classes-file",
        "A classes file that names a class twice",
        lambda t: _seg_data(t, "classes_file"),
        ValueError,
        r"classes\.txt' names \['disc'\] more than once",
    ),
    Case(
        "Segmentation",
        "seg-bad-image",
        "A truncated image among the images with masks",
        lambda t: _seg_data(t, "image"),
        Exception,
        r"1 image file\(s\) cannot be decoded:\n.*train_001\.png",
    ),
    Case(
        "Segmentation",
        "seg-plain-vit",
        "A backbone without a feature pyramid",
        lambda t: _segmenter(backbone="test_vit"),
        ValueError,
        r"gives feature maps at reductions \[16, 16, 16, 16, 16, 16\], but the U-Net and FPN decoders need",
    ),
    Case(
        "Segmentation",
        "seg-fpn-size",
        "An input size the FPN decoder cannot take",
        _fpn_on_48px,
        ValueError,
        r"The FPN decoder needs inputs whose height and width are multiples of 32, but the DataModule gives 48x48",
    ),
    Case(
        "Segmentation",
        "seg-ignore-index",
        "`ignore_index` that is a class",
        lambda t: _segmenter(ignore_index=0),
        ValueError,
        r"`ignore_index` 0 is a class index \(0\.\.2\); it must lie outside them",
    ),
    Case(
        "Segmentation",
        "seg-cache-features",
        "The feature cache on a segmenter",
        lambda t: _segmenter(cache_features=True),
        ValueError,
        r"`cache_features=True` caches one feature vector per image for a classifier's linear probe",
    ),
    Case(
        "Segmentation",
        "seg-classifier-on-masks",
        "Masks with a classifier",
        _classifier_on_masks,
        ValueError,
        r"gives a mask per image \(segmentation\), but the model \(task 'multiclass'\) predicts one label per image",
    ),
]


def _normalise(message: str, tmp_path: Path) -> str:
    message = message.replace(str(tmp_path.resolve()), "<tmp>").replace(str(tmp_path), "<tmp>")
    message = message.replace(str(REPO), "<repo>")
    return re.sub(r"\s+", " ", message).strip()


def _raise(case: Case, tmp_path: Path) -> str:
    with pytest.raises(case.error, match=case.match) as info:
        case.action(tmp_path)
    return _normalise(str(info.value), tmp_path)


def test_the_matrix_has_at_least_25_cases_with_unique_ids():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path):
    message = _raise(case, tmp_path)
    page = re.sub(r"\s+", " ", DOCS_PAGE.read_text())
    assert f"`{case.id}`" in page, f"{case.id} is missing from docs/errors.md: run python tests/e2e/test_bad_inputs.py"
    assert message.replace("`", "") in page.replace("`", ""), (
        f"the message of {case.id} changed; regenerate docs/errors.md with python tests/e2e/test_bad_inputs.py"
    )


HEADER = """# Bad input and the messages you get

lit_transfer checks its inputs early — at construction, in `setup`, before the first step — and every message
names the argument, file or setting at fault, echoes the bad value, and says how to fix it. The exception types
derive from the built-in ones you would expect (`ValueError` for bad values, `FileNotFoundError` for missing
files), so existing `except` clauses keep working. Nothing is lost when a run stops on an error: checkpoints
already written stay, and an interrupted `fit` (Ctrl-C, SIGTERM, a NaN loss) leaves an `on_exception.ckpt` that
`fit --ckpt_path` resumes.

Every case below is a test (`tests/e2e/test_bad_inputs.py`); the messages are copied from the test run, with
temporary paths shortened to `<tmp>`. The package's own exception classes are listed in the
[API reference](api/errors.md).
"""


CLI_HEADER = """## On the command line

The `lit-transfer` command prints a mistake in a config, on the command line or in the data as its last line and
exits with status 2 (`LIT_TRANSFER_TRACEBACK=1` shows the traceback); a run that succeeds exits with 0. Each case
below is the complete output of the real command (`tests/cli/test_cli_errors.py`), with the number of lines it printed.
"""


def write_docs_page() -> None:  # pragma: no cover - a maintenance script, run by hand
    import tempfile

    sections: dict[str, list[str]] = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                case.action(Path(tmp))
            except BaseException as err:
                message = _normalise(str(err), Path(tmp))
                kind = type(err).__name__
            else:
                raise SystemExit(f"{case.id} raised nothing")
        sections.setdefault(case.area, []).append(
            f"### {case.what}\n\n`{case.id}` — `{kind}`\n\n```text\n{message}\n```\n"
        )
    body = "\n".join(f"## {area}\n\n" + "\n".join(items) for area, items in sections.items())
    sys.path.insert(0, str(REPO / "tests" / "cli"))  # the command-line cases live with the CLI tests
    from test_cli_errors import docs_section

    DOCS_PAGE.write_text(HEADER + "\n" + body + "\n" + CLI_HEADER + "\n" + docs_section())


if __name__ == "__main__":
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    write_docs_page()
