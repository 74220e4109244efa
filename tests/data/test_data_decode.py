"""Decoding modes and bit depths, corrupt files, the bad-file scan."""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_transfer.data import BadImageError, ImageFolderDataModule, decode, load_image, scan_images
from lit_transfer.data.decode import check_image


def _gradient(h: int = 24, w: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 10, yy * 9, (xx + yy) * 5], -1).clip(0, 255).astype(np.uint8)


def _write_modes(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_gradient())
    files = {
        "RGB": folder / "rgb.png",
        "L": folder / "gray.png",
        "RGBA": folder / "rgba.png",
        "P": folder / "palette.png",
        "I;16": folder / "sixteen.png",
        "JPEG": folder / "photo.jpg",
    }
    rgb.save(files["RGB"])
    rgb.convert("L").save(files["L"])
    rgba = rgb.convert("RGBA")
    alpha = np.full((24, 20), 255, np.uint8)
    alpha[:, :10] = 0  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(files["RGBA"])
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(files["P"])
    Image.fromarray((np.arange(24 * 20).reshape(24, 20) * 130).astype(np.uint16)).save(files["I;16"])
    rgb.save(files["JPEG"], quality=95)
    return files


def _write_bad(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_gradient(64, 64)).save(buf, "JPEG")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    text = folder / "notes.jpg"
    text.write_text("this is not an image\n")
    return [empty, truncated, text]


def test_fixture_modes_are_what_they_claim(tmp_path: Path) -> None:
    files = _write_modes(tmp_path)
    for mode in ("RGB", "L", "RGBA", "P", "I;16"):
        with Image.open(files[mode]) as img:
            assert img.mode == mode or (mode, img.mode) == ("I;16", "I")  # Pillow < 10.3 opens 16-bit PNGs as I


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "JPEG"])
def test_every_mode_decodes_to_in_chans_uint8(tmp_path: Path, mode: str, in_chans: int) -> None:
    array = load_image(_write_modes(tmp_path)[mode], in_chans=in_chans)
    assert array.dtype == np.uint8
    assert array.shape == (24, 20, in_chans)


def test_sixteen_bit_is_scaled_to_eight_bit(tmp_path: Path) -> None:
    path = _write_modes(tmp_path)["I;16"]
    raw = np.asarray(Image.open(path), dtype=np.int64)
    assert raw.max() > 255  # really 16-bit data
    out = load_image(path, in_chans=1)[:, :, 0]
    np.testing.assert_allclose(out, np.rint(raw / 257.0), atol=1)
    assert out.max() > 200  # full-scale 16-bit maps to the top of the 8-bit range, not clipped to 255 everywhere
    assert (out < 255).mean() > 0.5


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    out = load_image(_write_modes(tmp_path)["RGBA"], in_chans=3)
    assert (out[:, :10] == 255).all()  # transparent half → white
    np.testing.assert_array_equal(out[:, 10:], _gradient()[:, 10:])  # opaque half unchanged


def test_grayscale_replicated_and_rgb_averaged(tmp_path: Path) -> None:
    files = _write_modes(tmp_path)
    gray = load_image(files["L"], in_chans=3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    np.testing.assert_array_equal(load_image(files["RGB"], in_chans=1)[..., 0], np.asarray(Image.open(files["L"])))


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(_gradient(30, 50))  # landscape 50x30
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (50, 30)
    assert load_image(path).shape == (50, 30, 3)  # displayed upright: portrait


def test_unsupported_mode_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32), mode="F").save(path)
    with pytest.raises(BadImageError, match=r"float\.tiff") as info:
        load_image(path)
    assert "'F'" in str(info.value)
    assert "unsupported image mode" in (check_image(path) or "")


@pytest.mark.parametrize("name", ["empty.jpg", "truncated.jpg", "notes.jpg"])
def test_each_bad_file_fails_decode_with_its_path(tmp_path: Path, name: str) -> None:
    _write_bad(tmp_path)
    with pytest.raises(BadImageError, match=name.replace(".", r"\.")):
        load_image(tmp_path / name)


def test_scan_reports_exactly_the_bad_files(tmp_path: Path) -> None:
    good = list(_write_modes(tmp_path / "good").values())
    bad = _write_bad(tmp_path / "bad")
    found = scan_images([*good, *bad])
    assert sorted(found) == sorted(str(p) for p in bad)
    assert "0 bytes" in found[str(bad[0])]


def _folder(root: Path, n_per_class: int = 4) -> Path:
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(_gradient() // (i + 1)).save(root / "train" / cls / f"{i}.png")
    return root


def test_setup_error_lists_all_bad_files_before_training(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds")
    bad = _write_bad(root / "train" / "a")
    dm = ImageFolderDataModule(root, num_workers=0, image_size=16, val_fraction=0)
    with pytest.raises(BadImageError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert message.startswith("3 image file(s)")
    for path in bad:
        assert str(path) in message
    assert "on_bad_image='skip'" in message


def test_skip_drops_bad_files_and_warns_with_count(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds")
    _write_bad(root / "train" / "a")
    dm = ImageFolderDataModule(root, num_workers=0, image_size=16, val_fraction=0, on_bad_image="skip")
    with pytest.warns(UserWarning, match="Skipping 3 unreadable"):
        dm.setup("fit")
    assert len(dm.train_dataset) == 8
    assert len(dm.skipped_files) == 3
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 16, 16) and sorted(labels.tolist()) == [0] * 4 + [1] * 4


def test_file_going_bad_after_scan_raises_naming_it(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds")
    dm = ImageFolderDataModule(root, num_workers=0, image_size=16, val_fraction=0, batch_size=8)
    dm.setup("fit")
    victim = root / "train" / "b" / "2.png"
    victim.write_bytes(b"\x89PNG garbage")
    with pytest.raises(BadImageError, match=r"2\.png"):
        list(dm.train_dataloader())


def test_worker_raises_clear_error_instead_of_dying(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds")
    dm = ImageFolderDataModule(root, num_workers=1, image_size=16, val_fraction=0, scan=False, batch_size=8)
    _write_bad(root / "train" / "a")
    dm.setup("fit")
    with pytest.raises(BadImageError, match=r"(empty|truncated|notes)\.jpg"):
        list(dm.train_dataloader())


def test_scan_is_cached_per_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds")
    dm = ImageFolderDataModule(root, num_workers=0, image_size=16, val_fraction=0)
    dm.setup("fit")
    assert len(dm._scan_cache) == 8
    # A corrupted file is not re-scanned by a second setup (cached), but caught by the decode check.
    (root / "train" / "a" / "0.png").write_bytes(b"")
    dm.setup("fit")
    assert dm._scan_cache[str(root / "train" / "a" / "0.png")] is None


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the files the bad-file scan decodes (``check_image`` calls), from any thread."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    real = decode.check_image

    def counting(path: str | os.PathLike) -> str | None:
        with lock:
            counts[os.fspath(path)] += 1
        return real(path)

    monkeypatch.setattr(decode, "check_image", counting)
    return counts


def test_threaded_scan_decodes_each_file_once_and_finds_the_bad_ones(tmp_path: Path, decodes: Counter[str]) -> None:
    """Enough files for the thread pool (64 or more): the same findings as one thread, each file decoded once."""
    Image.fromarray(_gradient(32, 32)).save(tmp_path / "x.jpg", quality=90)
    Image.fromarray(_gradient(32, 32)).save(tmp_path / "x.png")
    paths = []
    for i in range(200):
        ext = ".jpg" if i % 2 else ".png"
        shutil.copyfile(tmp_path / f"x{ext}", tmp_path / f"{i:03d}{ext}")
        paths.append(tmp_path / f"{i:03d}{ext}")
    bad = _write_bad(tmp_path / "bad")
    paths[50:50] = bad
    found = scan_images(paths, num_threads=2)
    assert list(found) == [str(p) for p in bad]  # in input order
    assert decodes == Counter({str(p): 1 for p in paths})
    decodes.clear()
    assert scan_images(paths, num_threads=1) == found


def test_setup_decodes_each_file_once_over_stages_and_calls(tmp_path: Path, decodes: Counter[str]) -> None:
    """The scan cache: a second `setup` decodes nothing again; a new stage or a new file decodes only what is new."""
    root = _folder(tmp_path / "ds")
    (root / "test" / "a").mkdir(parents=True)
    Image.fromarray(_gradient()).save(root / "test" / "a" / "t.png")
    train = {str(p) for p in (root / "train").rglob("*.png")}
    dm = ImageFolderDataModule(root, num_workers=0, image_size=16, val_fraction=0)
    dm.setup("fit")
    assert decodes == Counter(dict.fromkeys(train, 1))
    dm.setup("fit")
    dm.setup("validate")
    assert decodes == Counter(dict.fromkeys(train, 1))  # cached: no file decoded twice
    dm.setup("test")
    assert decodes == Counter({**dict.fromkeys(train, 1), str(root / "test" / "a" / "t.png"): 1})
    added = root / "train" / "b" / "new.png"
    Image.fromarray(_gradient()).save(added)
    dm.setup("fit")
    assert decodes[str(added)] == 1 and sum(decodes.values()) == len(train) + 2
    assert len(dm.train_dataset) == len(train) + 1


def test_loader_tensors_are_float32_chw_normalised(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    files = _write_modes(root / "raw")
    for cls, mode in (("a", "L"), ("a", "RGBA"), ("a", "P"), ("b", "I;16"), ("b", "RGB"), ("b", "JPEG")):
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[mode], root / "train" / cls / os.path.basename(files[mode]))
    shutil.rmtree(root / "raw")
    for in_chans in (1, 3):
        dm = ImageFolderDataModule(
            root, num_workers=0, image_size=16, val_fraction=0, batch_size=6, in_chans=in_chans, train_transform="none"
        )
        dm.setup("fit")
        images, _ = next(iter(dm.train_dataloader()))
        assert images.dtype == torch.float32 and images.shape == (6, in_chans, 16, 16)
        # ImageNet-normalised 8-bit data stays within [(0 - mean) / std, (1 - mean) / std] ⊂ [-2.2, 2.7]
        assert images.min() >= -2.2 and images.max() <= 2.7
        assert images.abs().mean() < 2.0
