"""SegmentationMaskWriter: a mask PNG per image at the image's own size, the letterbox undone, a few overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_fixture import make_segmentation_folder
from task_helpers import fit_trainer

from lit_transfer import SegmentationMaskWriter, TransferSegmenter
from lit_transfer.data import SegmentationFolderDataModule, load_mask
from lit_transfer.data.masks import image_size
from lit_transfer.data.segmentation_transforms import letterbox_shape


class Oracle(TransferSegmenter):
    """Predicts the letterboxed true mask of each predict image (class 0 in the padding), from its file."""

    def predict_step(self, batch, batch_idx):
        images, indices = batch
        paths = self.trainer.datamodule.predict_paths
        preds = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        for row, index in enumerate(indices.tolist()):
            truth = load_mask(Path(paths[index]).parent.parent / "masks" / (Path(paths[index]).stem + ".png"))
            height, width = letterbox_shape(*truth.shape, tuple(images.shape[2:]))
            small = Image.fromarray(truth).resize((width, height), Image.Resampling.NEAREST)
            preds[row, :height, :width] = torch.from_numpy(np.asarray(small).astype(np.int64))
        return {"preds": preds}


def test_masks_are_written_at_each_images_size_with_the_letterbox_undone(tmp_path: Path) -> None:
    root = make_segmentation_folder(tmp_path / "data", train=4, val=0, test=6, predict=0)
    data = SegmentationFolderDataModule(root, predict_dir=root / "test" / "images", image_size=64, num_workers=0)
    model = Oracle("test_resnet", num_classes=3, pretrained=False, decoder_channels=16)
    writer = SegmentationMaskWriter(tmp_path / "out", overlays=2)
    fit_trainer(tmp_path, 1, [writer]).predict(model, datamodule=data, return_predictions=False)
    images = sorted((root / "test" / "images").iterdir())
    assert [p.stem for p in writer.written] == [p.stem for p in images]
    for image, mask in zip(images, writer.written):
        predicted = np.asarray(Image.open(mask))
        truth = load_mask(root / "test" / "masks" / f"{image.stem}.png")
        assert predicted.shape == image_size(image) == truth.shape  # the image's own size (width x height differ)
        assert (predicted == truth)[truth != 255].mean() > 0.9  # back through 64 px: only edges differ
    assert sorted(p.stem for p in (tmp_path / "out" / "overlays").iterdir()) == [p.stem for p in images[:2]]


def test_a_model_without_class_maps_is_refused(tmp_path: Path) -> None:
    writer = SegmentationMaskWriter(tmp_path)
    with pytest.raises(ValueError, match=r"needs `predict_step` to return \{'preds': class indices \(N, H, W\)\}"):
        writer.write_on_batch_end(None, None, {"probs": torch.zeros(2, 3)}, [0, 1], None, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`overlays` must be a non-negative integer, got -1"):
        SegmentationMaskWriter(overlays=-1)
