"""The README's own-images command fine-tunes pretrained weights, and says so loudly when it is given random ones.

``recipes/fine_tune.yaml`` sets ``pretrained: true`` (offline, that is a clear exit 2, see test_offline_weights.py).
With random weights (``--model.pretrained false``) the freeze-then-unfreeze run warns in one line that frozen random
features learn nothing; with a weights file (the offline way the recipe documents) it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import yaml
from photo_fixture import make_photo_folder
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
README_FIT = [
    "fit",
    "--config",
    "recipes/defaults.yaml",
    "--config",
    "recipes/fine_tune.yaml",
    "--data",
    "ImageFolderDataModule",
    "--data.root",
    "path/to/images",
]
TINY = [
    "--model.backbone=test_resnet",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.image_size=32",
    "--data.num_workers=0",
]
WARNING = "frozen random features learn nothing"


def test_readme_command_is_in_the_readme() -> None:
    readme = " ".join((REPO / "README.md").read_text().replace("\\\n", " ").split())
    assert "lit-transfer " + " ".join(README_FIT) in readme


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    make_photo_folder(
        cwd / "path" / "to" / "images", per_class=4, val_per_class=1, test_per_class=0, predict=0, bad_files=False
    )
    save_file(
        {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()},
        str(cwd / "test_resnet.safetensors"),
    )
    return cwd


def _fit(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(LIT_TRANSFER), *README_FIT, *TINY, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_recipe_asks_for_pretrained_weights(folder: Path) -> None:
    result = _fit(folder, "--print_config")
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["init_args"]["pretrained"] is True
    assert config["model"]["init_args"]["freeze"]["class_path"].endswith("FreezeUnfreeze")


@pytest.mark.slow  # over ~15 s on 2 cores
def test_random_backbone_warns_and_a_weights_file_does_not(folder: Path) -> None:
    random = _fit(folder, "--model.pretrained=false")
    output = random.stdout + random.stderr
    assert random.returncode == 0, output[-3000:]
    warned = [line for line in output.splitlines() if WARNING in line]
    assert len(warned) == 1, output[-3000:]
    assert "`freeze: freeze_unfreeze`" in warned[0] and "--model.pretrained path/to/weights.safetensors" in warned[0]

    weights = _fit(folder, "--model.pretrained=test_resnet.safetensors")
    output = weights.stdout + weights.stderr
    assert weights.returncode == 0, output[-3000:]
    assert WARNING not in output and "Loaded test_resnet weights from test_resnet.safetensors" in output
