#!/usr/bin/env bash
# The oldest releases the package accepts: every direct dependency (and the export extra's) pinned to the oldest
# release its floor in pyproject.toml admits (.ci/oldest_pins.py; torch: the release CI installs), resolved by pip into
# a fresh venv, the package installed over it (editable, no dependencies), then the default test run (`-m "not
# slow"`). A floor that is too low fails here: a pip conflict names it, or a test fails on the old release.
#
# Uses .venv/bin/python (which has `packaging`) to compute the pins; creates the venv with python3 (PYTHON overrides).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$PYTHON" -m venv "$WORK/venv"
PIP="$WORK/venv/bin/pip"
"$PIP" install -q --upgrade pip
"$REPO/.venv/bin/python" "$REPO/.ci/oldest_pins.py" "$REPO/pyproject.toml" "$PIP" 2.14.1 export > "$WORK/pins.txt"
echo "oldest releases the floors admit: $(tr '\n' ' ' < "$WORK/pins.txt")"
# with the test tools of the dev extra, resolved together with the pins
"$PIP" install -q -r "$WORK/pins.txt" "pytest>=9" "pytest-timeout>=2.3" "pytest-rerunfailures>=14" "pytest-xdist>=3.8"
"$PIP" install -q --no-deps -e "$REPO"
cd "$REPO"
"$WORK/venv/bin/python" -m pytest -m "not slow" -n 2 --dist loadfile -p no:cacheprovider -q
