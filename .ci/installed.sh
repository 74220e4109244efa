#!/usr/bin/env bash
# The pip user's path: build the sdist and the wheel (the wheel from the sdist), install the wheel with the export
# extra into a fresh virtual environment, and run the installed package from a folder outside the clone: the quick
# --version, the recipe list, a recipe by its documented path, predict, an ONNX export and the quick start (--fast);
# then the sdist's own packaging, import-graph and recipes-command tests from the unpacked sdist.
#
#   .ci/installed.sh            a new venv in a temporary folder, removed at the end
#   LIT_TRANSFER_VENV=DIR .ci/installed.sh
#                               reuse (or create and keep) DIR: torch is installed once, the wheel every time
#
# Builds with .venv/bin/python (BUILD_PYTHON overrides; it needs the `build` package of the dev extra) and creates the
# venv with python3 (PYTHON overrides). Every command's exit status is checked; the first failure ends the script.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PYTHON="${BUILD_PYTHON:-$REPO/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

step() { printf '\n== %s\n' "$*"; }
fail() { echo "installed.sh: $*" >&2; exit 1; }

step "build the sdist, then the wheel from it"
"$BUILD_PYTHON" -m build --outdir "$WORK/dist" "$REPO" > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "build failed"; }
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"
echo "$SDIST"
echo "$WHEEL"
"$BUILD_PYTHON" - "$SDIST" "$WHEEL" "$REPO" <<'PY'
"""The sdist and the wheel carry the recipes, the LICENSE and (the sdist) what its tests read."""
import sys, tarfile, zipfile
from pathlib import Path

sdist, wheel, repo = sys.argv[1], sys.argv[2], Path(sys.argv[3])
recipes = sorted(p.name for p in (repo / "recipes").glob("*.yaml"))
with tarfile.open(sdist) as tar:
    names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
with zipfile.ZipFile(wheel) as whl:
    wheel_names = set(whl.namelist())
missing = [f"recipes/{r}" for r in recipes if f"recipes/{r}" not in names]
missing += [n for n in ("LICENSE", "tests/conftest.py", "docs/getting-started.md", "mkdocs.yml") if n not in names]
missing += [f"wheel: lit_transfer/recipes/{r}" for r in recipes if f"lit_transfer/recipes/{r}" not in wheel_names]
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel_names):
    missing.append("wheel: LICENSE")
if missing:
    sys.exit(f"missing from the distributions: {missing}")
print(f"sdist and wheel carry the {len(recipes)} recipes and the LICENSE")
PY

VENV="${LIT_TRANSFER_VENV:-$WORK/venv}"
step "a virtual environment at $VENV: torch (the Makefile's pins), then the wheel with the export extra"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$WHEEL"
"$VENV/bin/python" -m pip install -q "$WHEEL[export]"

USER_DIR="$WORK/my-project"  # a folder of the user's own, outside the clone
mkdir -p "$USER_DIR"
cd "$USER_DIR"
PATH="$VENV/bin:$PATH"
export PATH

step "the installed package, not the clone"
where="$(python -c 'import lit_transfer; print(lit_transfer.__file__)')"
case "$where" in "$VENV"/*) echo "$where" ;; *) fail "lit_transfer imported from $where, not from $VENV" ;; esac

step "lit-transfer --version"
version="$(lit-transfer --version)"
expected="lit-transfer $(basename "$WHEEL" | cut -d- -f2)"
[ "$version" = "$expected" ] || fail "--version printed '$version', expected '$expected'"
echo "$version"

step "lit-transfer recipes"
lit-transfer recipes | tee "$WORK/recipes.txt"
grep -q "^  defaults " "$WORK/recipes.txt" || fail "lit-transfer recipes does not list defaults"

TINY=(--model.backbone=test_resnet --model.pretrained=false --trainer.max_epochs=1 --trainer.limit_train_batches=2
  --trainer.limit_val_batches=1 --trainer.limit_predict_batches=1 --trainer.enable_progress_bar=false)
RECIPE=(--config recipes/defaults.yaml --config recipes/linear_probe.yaml)  # the docs' paths; no recipes/ here
[ ! -e recipes ] || fail "the user's folder must not hold recipes/"

step "lit-transfer fit ${RECIPE[*]}"
lit-transfer fit "${RECIPE[@]}" "${TINY[@]}" 2>&1 | tee "$WORK/fit.txt"
grep -q "using the recipe shipped with the package" "$WORK/fit.txt" || fail "fit did not say it used the shipped recipe"
BEST="runs/linear_probe/lightning_logs/version_0/checkpoints/best.ckpt"
[ -f "$BEST" ] || fail "fit left no $BEST"

step "lit-transfer predict ${RECIPE[*]} --ckpt_path best"
lit-transfer predict "${RECIPE[@]}" "${TINY[@]}" --ckpt_path best
[ -f runs/linear_probe/lightning_logs/version_0/predict/predictions.csv ] || fail "predict wrote no predictions.csv"

step "ONNX export (docs/export.md), checked with onnxruntime"
python -c "from lit_transfer.export import export_onnx; export_onnx('$BEST', 'model.onnx')"
python -c "import onnxruntime; s = onnxruntime.InferenceSession('model.onnx'); print('onnxruntime inputs:', [i.shape for i in s.get_inputs()])"

step "the quick start, fast form"
python -m lit_transfer.demo.quickstart --fast --out runs/quickstart
[ -n "$(find runs/quickstart -name 'best.ckpt' -print -quit)" ] || fail "the quick start left no best.ckpt"

step "the sdist's own tests (packaging, import graph, the recipes command), run from the unpacked sdist"
mkdir -p "$WORK/sdist"
tar -xzf "$SDIST" -C "$WORK/sdist"
SDIST_ROOT="$(find "$WORK/sdist" -mindepth 1 -maxdepth 1 -type d)"
python -m pip install -q "pytest>=8" "pytest-timeout>=2.3" "pytest-rerunfailures>=14"
(cd "$SDIST_ROOT" && python -m pytest -q tests/test_packaging.py tests/test_import_graph.py tests/cli/test_recipes_command.py)

step "the installed package works from $USER_DIR"
