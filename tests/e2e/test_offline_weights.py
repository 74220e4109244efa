"""Hub weights on a machine without them: the real command and Python, with an empty Hugging Face cache.

The getting-started command (``--model.pretrained true``) and ``recipes/my_images.yaml`` (``pretrained: true``) end
with exit status 2 and the reason, once, as the last line, in seconds; Python raises the same
``WeightsUnavailableError``. Offline is either ``HF_HUB_OFFLINE=1`` or a proxy that refuses connections (the probe
asks through it, as huggingface_hub would).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from photo_fixture import make_photo_folder

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
DEFAULTS = ["--config", str(REPO / "recipes" / "defaults.yaml")]
GETTING_STARTED = [
    "fit",
    *DEFAULTS,
    "--model.backbone",
    "resnet18.a1_in1k",
    "--model.pretrained",
    "true",
    "--data",
    "ImageFolderDataModule",
    "--data.root",
    "my_images",
]
MY_IMAGES = ["fit", *DEFAULTS, "--config", str(REPO / "recipes" / "my_images.yaml")]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _offline_env(tmp_path: Path, how: str) -> dict[str, str]:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "NO_PROXY", "no_proxy", "HF_HUB_OFFLINE"):
        env.pop(name, None)
    if how == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # a proxy that refuses: nothing reaches the network
        env["HTTPS_PROXY"] = env["HTTP_PROXY"] = f"http://127.0.0.1:{_closed_port()}"
    return env


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("offline")
    make_photo_folder(cwd / "my_images", per_class=2, val_per_class=1, test_per_class=0, predict=0, bad_files=False)
    (cwd / "data").mkdir()
    (cwd / "data" / "my_images").symlink_to(cwd / "my_images", target_is_directory=True)
    return cwd


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "refusing proxy"])
@pytest.mark.parametrize(("args", "model"), [(GETTING_STARTED, "resnet18.a1_in1k"), (MY_IMAGES, "resnet50.a1_in1k")])
def test_command_without_weights_exits_2_with_the_reason_last(folder, tmp_path, args, model, how):
    start = time.monotonic()
    result = subprocess.run(
        [str(LIT_TRANSFER), *args],
        cwd=folder,
        env=_offline_env(tmp_path, how),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output[-3000:]
    last = output.splitlines()[-1]
    assert last.startswith(f"Pretrained weights for '{model}' (hub id 'timm/{model}')"), output[-3000:]
    assert "--model.pretrained path/to/weights.safetensors" in last and str(tmp_path / "hf_home") in last
    assert output.count("Pretrained weights for") == 1 and "Traceback" not in output and "Namespace(" not in output
    assert len(output.splitlines()) <= 6, output
    assert elapsed < 60, f"{elapsed:.0f} s: the failure must not wait for download retries"


def test_python_raises_the_same_error_fast(tmp_path):
    script = (
        "import time\n"
        "from lit_transfer import TransferClassifier\n"
        "from lit_transfer.errors import WeightsUnavailableError\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    TransferClassifier('resnet18.a1_in1k', num_classes=2, pretrained=True)\n"
        "except WeightsUnavailableError as err:\n"
        "    print(f'{time.monotonic() - start:.2f}', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=_offline_env(tmp_path, "refusing proxy"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seconds, message = result.stdout.strip().split(" ", 1)
    assert float(seconds) < 5 and message.startswith("Pretrained weights for 'resnet18.a1_in1k'"), result.stdout
