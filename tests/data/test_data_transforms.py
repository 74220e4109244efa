"""Presets, YAML/JSON pipelines, the Normalize → ToTensorV2 tail, and timm data-config parity (G4, H2)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import timm
import timm.data
import torch
import yaml
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageDraw

from lit_transfer.data import PRESETS, DigitsDataModule, build_eval_transform, build_train_transform, finalize_pipeline
from lit_transfer.data.preprocessing import resolve_preprocessing
from lit_transfer.data.resize import AntialiasedRandomResizedCrop, EvalResizeCrop

TAGS = ["resnet18", "vit_base_patch16_224.augreg_in21k_ft_in1k", "convnext_tiny"]


def _natural(h: int = 300, w: int = 260) -> np.ndarray:
    """A smooth, photo-like RGB image (interpolation differences stay small on it)."""
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [128 + 100 * np.sin(xx / 17.0), 128 + 100 * np.cos(yy / 23.0), 128 + 60 * np.sin((xx + yy) / 31.0)]
    return np.stack(channels, -1).clip(0, 255).astype(np.uint8)


def _timm_config(tag: str) -> dict:
    return timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(tag).to_dict())


@pytest.mark.parametrize("tag", TAGS)
def test_eval_pipeline_matches_timm_config(tag: str) -> None:
    cfg = _timm_config(tag)
    geometry, normalize, to_tensor = build_eval_transform(cfg).transforms
    size = cfg["input_size"][1]
    assert isinstance(geometry, EvalResizeCrop) and geometry.size == (size, size)
    assert geometry.crop_pct == cfg["crop_pct"] and geometry.interpolation == cfg["interpolation"]
    assert tuple(normalize.mean) == pytest.approx(cfg["mean"]) and tuple(normalize.std) == pytest.approx(cfg["std"])
    assert normalize.max_pixel_value == 255.0
    assert isinstance(to_tensor, ToTensorV2)


def test_tags_really_differ() -> None:
    """Guard: the parity tests compare configs that are not all the same."""
    resnet, vit = _timm_config(TAGS[0]), _timm_config(TAGS[1])
    assert resnet["mean"] != vit["mean"] and resnet["crop_pct"] != vit["crop_pct"]
    assert _timm_config("resnet50.tv_in1k")["interpolation"] == "bilinear" != resnet["interpolation"]


def _large_photo(height: int = 3000, width: int = 4000) -> np.ndarray:
    """A phone-sized photo-like image: smooth light, textured objects, sensor noise, JPEG-compressed."""
    rng = np.random.default_rng(0)
    x, y = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)[:, None]
    light = 0.6 + 0.4 * np.cos(x / width * 2.1) * np.cos(y / height * 1.7)
    texture = [
        np.sin(x / (9.0 + 3 * c) + c) * np.cos(y / 23.0) + np.cos(x / (9.0 + 3 * c) + c) * np.sin(y / 23.0)
        for c in range(3)
    ]  # sin(x / k + y / 23 + c), a fine oblique texture
    base = np.stack([tint * light + 40 * t for tint, t in zip((150.0, 120.0, 90.0), texture)], axis=-1)
    base += 10 * rng.standard_normal(base.shape, dtype=np.float32)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    ImageDraw.Draw(image).ellipse((1200, 700, 2800, 2300), fill=(235, 230, 220))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _zone_plate(height: int = 1500, width: int = 2000) -> np.ndarray:
    """A test chart of rising spatial frequency (up to the pixel pitch): it aliases under an unfiltered downscale."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    radius2 = (xx - width / 2) ** 2 + (yy - height / 2) ** 2
    gray = np.round(127.5 + 127.5 * np.cos(np.pi * radius2 / (2 * max(height, width)))).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _checkerboard(height: int = 1500, width: int = 2000, square: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    gray = (((yy // square) + (xx // square)) % 2 * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


IMAGES = {"photo-4000x3000": _large_photo, "zone-plate-2000x1500": _zone_plate, "checkerboard-2000x1500": _checkerboard}
CONFIGS = {
    "resnet18": _timm_config("resnet18"),  # bicubic, crop_pct 0.95
    "vit-augreg": _timm_config("vit_base_patch16_224.augreg_in21k_ft_in1k"),  # mean/std 0.5, crop_pct 0.9
    "resnet50-tv": _timm_config("resnet50.tv_in1k"),  # bilinear, crop_pct 0.875
    "squash": {**_timm_config("resnet18"), "crop_mode": "squash"},
    "border": {**_timm_config("resnet18"), "crop_mode": "border", "crop_pct": 1.0},
    "non-square": {**_timm_config("resnet18"), "input_size": (3, 160, 224)},
}
EXACT = 1e-6
"""Mean |ours - timm| allowed: float rounding of the two normalisations (measured about 1e-7)."""


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {name: make() for name, make in IMAGES.items()}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("image", IMAGES)
def test_eval_output_equals_timm_create_transform(images: dict, image: str, config: str) -> None:
    """The tensor of our eval pipeline is timm's ``create_transform(**data_config)`` output, to float rounding."""
    cfg = CONFIGS[config]
    array = images[image]
    reference = timm.data.create_transform(**cfg, is_training=False)(Image.fromarray(array))
    ours = build_eval_transform(cfg)(image=array)["image"]
    assert ours.dtype == torch.float32 and ours.shape == reference.shape == tuple(cfg["input_size"])
    difference = (ours - reference).abs()
    assert difference.mean() < EXACT and difference.max() < 10 * EXACT


def _opencv_eval(cfg: dict, area: bool) -> A.Compose:
    """The eval geometry in Albumentations' own resizes: OpenCV (no antialiasing), or INTER_AREA when downscaling."""
    resolved = resolve_preprocessing(cfg)
    return finalize_pipeline(
        [
            A.SmallestMaxSize(
                max_size=resolved.resize_size[0],
                interpolation=resolved.cv2_interpolation,
                area_for_downscale="image" if area else None,
            ),
            A.CenterCrop(*resolved.size),
        ],
        mean=resolved.mean,
        std=resolved.std,
    )


def test_opencv_resizes_alias_where_timm_does_not(images: dict) -> None:
    """Why the eval transform uses Pillow: OpenCV's resize aliases the chart; INTER_AREA is not timm's filter."""
    cfg = CONFIGS["resnet18"]
    reference = timm.data.create_transform(**cfg, is_training=False)(Image.fromarray(images["zone-plate-2000x1500"]))
    plain = _opencv_eval(cfg, area=False)(image=images["zone-plate-2000x1500"])["image"]
    area = _opencv_eval(cfg, area=True)(image=images["zone-plate-2000x1500"])["image"]
    assert plain.std() > 2 * reference.std()  # aliasing: contrast that the downscaled chart does not have
    assert (plain - reference).abs().mean() > 1000 * EXACT and (area - reference).abs().mean() > 1000 * EXACT


def test_train_crops_are_antialiased_too(images: dict) -> None:
    """A random crop of the checkerboard resized to 224 px is a flat grey, as Pillow (timm) makes it, not a moire."""
    cfg = CONFIGS["resnet18"]
    reference = timm.data.create_transform(**cfg, is_training=False)(Image.fromarray(images["checkerboard-2000x1500"]))
    for preset in ("light", "medium", "heavy"):  # the others add rotations (black corners) and colour changes
        assert isinstance(build_train_transform(preset, cfg).transforms[0], AntialiasedRandomResizedCrop)
    pipeline = build_train_transform("light", cfg)
    pipeline.set_random_seed(0)
    for _ in range(4):
        out = pipeline(image=images["checkerboard-2000x1500"])["image"]
        assert out.std() < 2 * reference.std() + 0.05
    resolved = resolve_preprocessing(cfg)
    opencv = finalize_pipeline(
        [A.RandomResizedCrop(size=(224, 224), scale=(0.6, 1.0), interpolation=cv2.INTER_CUBIC)],
        mean=resolved.mean,
        std=resolved.std,
    )
    assert opencv(image=images["checkerboard-2000x1500"])["image"].std() > 5 * reference.std()  # what was fixed


def test_eval_geometry_keeps_masks_aligned() -> None:
    image = _natural(300, 260)
    mask = (image[..., 0] > 128).astype(np.uint8)
    out = A.Compose([EvalResizeCrop((64, 64), crop_pct=0.875)])(image=image, mask=mask)
    assert out["image"].shape[:2] == out["mask"].shape == (64, 64) and set(np.unique(out["mask"])) <= {0, 1}


def test_model_data_config_from_tiny_timm_model() -> None:
    model = timm.create_model("test_vit", pretrained=False)
    cfg = timm.data.resolve_model_data_config(model)
    out = build_eval_transform(cfg)(image=_natural())["image"]
    assert out.shape == cfg["input_size"]


def test_defaults_come_from_timm_constants() -> None:
    cfg = resolve_preprocessing(None)
    assert cfg.mean == tuple(timm.data.IMAGENET_DEFAULT_MEAN) and cfg.std == tuple(timm.data.IMAGENET_DEFAULT_STD)
    assert cfg.crop_pct == timm.data.DEFAULT_CROP_PCT and cfg.size == (224, 224)


def test_image_size_override_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        cfg = resolve_preprocessing(_timm_config("resnet18"), image_size=64)
    assert cfg.size == (64, 64)
    assert "Image size 64 overrides the backbone's input size 224x224" in caplog.text


def test_single_channel_statistics() -> None:
    cfg = resolve_preprocessing(_timm_config("resnet18"), in_chans=1)
    assert cfg.mean == pytest.approx((np.mean(timm.data.IMAGENET_DEFAULT_MEAN),))
    out = build_eval_transform(cfg)(image=_natural()[..., :1])["image"]
    assert out.shape == (1, 224, 224)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_give_normalised_float_chw(preset: str) -> None:
    cfg = {"input_size": (3, 48, 48), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    pipeline = build_train_transform(preset, cfg)
    assert isinstance(pipeline.transforms[-2], A.Normalize) and isinstance(pipeline.transforms[-1], ToTensorV2)
    outs = torch.stack([pipeline(image=_natural(80, 90))["image"] for _ in range(4)])
    assert outs.dtype == torch.float32 and outs.shape == (4, 3, 48, 48)
    # 8-bit data through mean 0.5 / std 0.25 lies in [-2, 2]; the natural image is centred near 0.5
    assert outs.min() >= -2.0 - 1e-6 and outs.max() <= 2.0 + 1e-6
    assert abs(outs.mean().item()) < 0.6 and 0.3 < outs.std().item() < 2.0


def test_unknown_preset_is_rejected_with_choices() -> None:
    with pytest.raises(ValueError, match=r"`train_transform` must be one of \['none', 'light', 'medium', 'heavy'\]"):
        DigitsDataModule(train_transform="strong")


CLASS_PATH_SPEC = [
    {"class_path": "albumentations.RandomResizedCrop", "init_args": {"size": [32, 32], "scale": [0.5, 1.0]}},
    {
        "class_path": "albumentations.OneOf",
        "init_args": {
            "transforms": [
                {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 1.0}},
                {"class_path": "albumentations.VerticalFlip"},
            ],
            "p": 0.5,
        },
    },
]


def test_class_path_list_builds_and_gets_tail() -> None:
    pipeline = build_train_transform(yaml.safe_load(yaml.safe_dump(CLASS_PATH_SPEC)), image_size=32)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["RandomResizedCrop", "OneOf", "Normalize", "ToTensorV2"]
    assert pipeline.transforms[0].scale == (0.5, 1.0)
    # The class's own default p (1.0) is kept; Albumentations' from_dict would default a missing p to 0.5.
    assert pipeline.transforms[0].p == 1.0 and pipeline.transforms[1].transforms[1].p == 0.5
    assert pipeline(image=_natural(50, 60))["image"].shape == (3, 32, 32)


def test_albumentations_to_dict_round_trip_through_yaml_and_json(tmp_path: Path) -> None:
    original = A.Compose([A.RandomResizedCrop(size=(32, 32), scale=(0.7, 1.0)), A.HorizontalFlip(p=0.25)])
    serialised = A.to_dict(original)
    (tmp_path / "aug.yaml").write_text(yaml.safe_dump(serialised))
    (tmp_path / "aug.json").write_text(json.dumps(serialised))
    for spec in (serialised, serialised["transform"], str(tmp_path / "aug.yaml"), tmp_path / "aug.json"):
        pipeline = build_train_transform(spec, image_size=32)
        flip = pipeline.transforms[1]
        assert isinstance(flip, A.HorizontalFlip) and flip.p == 0.25
        assert [type(t).__name__ for t in pipeline.transforms[2:]] == ["Normalize", "ToTensorV2"]


def test_user_normalize_kept_and_tail_completed() -> None:
    spec = [{"class_path": "albumentations.Normalize", "init_args": {"mean": 0.5, "std": 0.5}}]
    with pytest.warns(UserWarning, match="differs from the backbone's mean"):
        pipeline = build_train_transform(spec)
    assert [type(t).__name__ for t in pipeline.transforms] == ["Normalize", "ToTensorV2"]
    assert pipeline.transforms[0].p == 1.0


def test_to_tensor_before_normalize_is_an_error() -> None:
    spec = [{"class_path": "albumentations.pytorch.ToTensorV2"}, {"class_path": "albumentations.Normalize"}]
    with pytest.raises(ValueError, match=r"`ToTensorV2` must be the last step.*followed by Normalize"):
        build_train_transform(spec)
    with pytest.raises(ValueError, match="`ToTensorV2` must be the last step"):
        DigitsDataModule(train_transform=spec)


def test_nested_to_tensor_is_an_error() -> None:
    nested = A.Compose([A.OneOf([ToTensorV2(), A.HorizontalFlip()])])
    with pytest.raises(ValueError, match="nested inside OneOf"):
        build_train_transform(nested)


def test_non_albumentations_class_path_and_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must name an Albumentations transform"):
        build_train_transform([{"class_path": "torchvision.transforms.RandomCrop"}])
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        DigitsDataModule(train_transform=str(tmp_path / "missing.yaml"))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(yaml.YAMLError):
        build_train_transform(str(path))


def test_yaml_pipelines_survive_jsonargparse() -> None:
    """LightningCLI parses `train_transform` through jsonargparse: lists and mappings must stay data."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DigitsDataModule, "data")
    config = parser.parse_string(
        yaml.safe_dump({"data": {"train_transform": CLASS_PATH_SPEC, "data_config": {"mean": [0.5, 0.5, 0.5]}}})
    )
    dm = parser.instantiate(config).data
    assert dm.num_classes == 10
    crop, one_of, *_ = dm.build_train_transform().transforms
    assert isinstance(crop, A.RandomResizedCrop) and crop.scale == (0.5, 1.0) and crop.p == 1.0
    assert [(type(t).__name__, t.p) for t in one_of.transforms] == [("HorizontalFlip", 1.0), ("VerticalFlip", 0.5)]


def test_image_size_below_the_floor_is_refused(tmp_path: Path) -> None:
    from lit_transfer.data import ImageFolderDataModule

    match = r"`image_size` gives 4x4 px images, below the 8 px floor.*Set `image_size` to at least 8"
    with pytest.raises(ValueError, match=match):
        resolve_preprocessing(None, image_size=4)
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(image_size=4)
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.fromarray(_natural(20, 20)).save(tmp_path / "train" / name / "0.png")
    with pytest.raises(ValueError, match=match):
        ImageFolderDataModule(tmp_path, image_size=4, num_workers=0)
    with pytest.raises(ValueError, match=r"`data_config\['input_size'\]` gives 3x3 px"):
        resolve_preprocessing({"input_size": (3, 3, 3)})
    assert resolve_preprocessing(None, image_size=8).size == (8, 8)  # the digits' native size stays valid


def test_to_dict_is_plain_and_round_trips() -> None:
    cfg = resolve_preprocessing(_timm_config("vit_base_patch16_224.augreg_in21k_ft_in1k"), image_size=32, in_chans=1)
    plain = cfg.to_dict()
    assert plain == {
        "input_size": [1, 32, 32],
        "mean": [0.5],
        "std": [0.5],
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "crop_mode": "center",
    }
    assert json.loads(json.dumps(plain)) == plain
    assert resolve_preprocessing(plain, in_chans=1) == cfg
