"""The pip user's path: ``.ci/installed.sh`` builds the sdist and wheel, installs the wheel into a fresh venv and runs
the installed package from a folder outside the clone (version, recipes, fit by a documented recipe path, predict,
ONNX export, the quick start). The script is the one source of those steps; this test runs it and checks its exit
status. ``LIT_TRANSFER_VENV=DIR`` makes the script reuse a venv that already holds torch (minutes and 5 GB saved).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "installed.sh"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("CI") == "true", reason=".ci/run runs .ci/installed.sh itself, once")
@pytest.mark.skipif(not SCRIPT.is_file(), reason="no .ci/installed.sh beside these tests (an sdist without .ci/)")
def test_the_installed_wheel_runs_the_documented_commands_outside_the_clone() -> None:
    env = {**os.environ, "BUILD_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=3500, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    for step in ("lit-transfer --version", "lit-transfer recipes", "lit-transfer fit", "lit-transfer predict", "ONNX"):
        assert f"== {step}" in output, f"the script did not run the step {step!r}:\n{output[-4000:]}"
    assert "using the recipe shipped with the package" in output
