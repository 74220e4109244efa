"""Untrusted YAML and checkpoints are never executed or fully unpickled."""

import contextlib
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_yaml_python_tags_are_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"model:\n  init_args:\n    backbone: !!python/object/apply:os.system ['touch {marker}']\n")
    from lit_transfer.cli import TransferCLI

    with contextlib.suppress(Exception):
        TransferCLI(
            args=["--config", str(REPO / "recipes" / "defaults.yaml"), "--config", str(recipe)],
            run=False,
            parser_kwargs={"exit_on_error": False},
        )
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cli_refuses_a_malicious_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(str(marker))}, "epoch": 0}, ckpt)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_transfer",
            "validate",
            "--config",
            str(REPO / "recipes" / "defaults.yaml"),
            "--model.backbone",
            "test_resnet",
            "--ckpt_path",
            str(ckpt),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert not marker.exists()
    assert "Weights only load failed" in result.stderr or "pickled" in result.stderr
