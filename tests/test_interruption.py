"""A real SIGTERM to a real `lit-transfer fit` process leaves a checkpoint that `fit --ckpt_path` resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FREEZING_KEY = "LayerFreezing[backbone_attr=backbone]"


def _fit_command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lit_transfer",
        "fit",
        "--config",
        str(REPO / "recipes" / "defaults.yaml"),
        "--model.backbone",
        "test_resnet",
        "--model.freeze",
        "freeze_unfreeze",
        "--data.image_size",
        "16",
        "--data.batch_size",
        "8",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def test_sigterm_mid_epoch_then_resume(tmp_path):
    root = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        _fit_command(root, "--trainer.max_epochs", "40"), cwd=tmp_path, env=_env(), stdout=log, stderr=log
    )
    deadline = time.monotonic() + 240
    while not list(root.rglob("last.ckpt")):  # the end of epoch 0: the unfreeze happens at epoch 1
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    log.close()
    [saved] = list(root.rglob("on_exception.ckpt"))
    state = torch.load(saved, weights_only=True)
    assert state["epoch"] >= 1 and state["global_step"] > 0
    assert state["callbacks"][FREEZING_KEY]["trainable_groups"] == 6  # unfrozen when interrupted
    assert state["optimizer_states"][0]["state"], "optimizer state lost"

    stop = state["epoch"] + 2
    resumed = subprocess.run(
        _fit_command(root, "--trainer.max_epochs", str(stop), "--ckpt_path", str(saved)),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    final = torch.load(newest, weights_only=True)
    assert final["epoch"] == stop - 1
    assert final["global_step"] > state["global_step"]
    assert final["callbacks"][FREEZING_KEY]["trainable_groups"] == 6
    assert set(final["optimizer_states"][0]["state"]) == set(state["optimizer_states"][0]["state"])
