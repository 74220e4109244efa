"""Every shell and Python block of README.md and docs/ runs, with tiny settings, or is excluded with a reason.

The blocks are read from the pages themselves, so a new or changed block is run (or fails here until it runs or
is listed in :data:`EXCLUDED`); an exclusion or a per-block note that no longer matches a block fails too.

* Shell blocks (bash, sh, console): each ``lit-transfer ...``, ``python -m lit_transfer ...`` and ``python -c ...``
  line runs through a real subprocess of the venv's console script or interpreter. ``lit-transfer`` lines get
  tiny-run overrides appended (``test_resnet`` with the pretrained weights of a local file, or random weights
  where the command asks for them, one epoch of two batches, 32 px photos); none may warn that it freezes a
  random backbone;
  placeholders such as ``path/to/best.ckpt`` and ``<best.ckpt>`` become a checkpoint of a shared fitted run
  (the digits run; for a command on the photos, a photo run fitted on first need). ``fit`` must leave
  ``best.ckpt``/``last.ckpt`` in ``runs/<name>/lightning_logs/version_N/checkpoints/`` and the files
  docs/getting-started.md lists beside them; ``test`` and ``predict`` must write ``confusion_matrix.png``/``.csv``
  and ``predictions.csv`` into the evaluated run's ``test/`` and ``predict/`` folders and print where.
* Python blocks run as scripts after an AST rewrite to tiny settings: ``Trainer(max_epochs=N)`` becomes one
  epoch of two batches, a timm model name in ``TransferClassifier``/``timm.create_model`` becomes
  ``test_resnet`` with ``pretrained=False`` (the name itself is checked against timm's registry), and
  ``ImageFolderDataModule`` gets ``image_size=32``. Blocks written as ``>>>`` sessions run as doctests, unchanged.

Each block runs in its own working directory holding ``recipes`` (a link to the repository's), a two-class photo
folder (cat, dog, as docs/getting-started.md draws it) at ``my_images``, ``data/my_images`` and
``path/to/images``, and a copy of one shared tiny ``lit-transfer fit --config recipes/defaults.yaml`` run at
``runs/defaults/lightning_logs/version_0``. Python blocks are forked from one interpreter that has imported
torch, Lightning, timm and lit_transfer once: every block still gets a fresh process, without paying ~5 s of
imports each.
"""

from __future__ import annotations

import ast
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import TINY
from photo_fixture import make_photo_folder

ROOT = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
RUN = "runs/defaults/lightning_logs/version_0"
"""The shared fitted digits run, copied into every block's working directory."""
PHOTO_RUN = "runs/my_images/lightning_logs/version_0"
"""The shared fitted run on the photos (recipes/my_images.yaml), for commands on them that name a checkpoint."""
PHOTO_LINKS = ("my_images", "data/my_images", "path/to/images")
TIMEOUT_S = 300

LANGUAGES = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "shell", "python": "python", "py": "python"}
"""Fence languages whose blocks a user runs; other blocks (text, yaml) are output or configuration."""
NOT_PAGES = ("docs/vendor/",)
"""Vendored third-party files, not site pages (``exclude_docs`` in mkdocs.yml)."""

# The one table of blocks that are not run: (page, a string of the block) -> why.
EXCLUDED: dict[tuple[str, str], str] = {
    ("README.md", "make quickstart"): "pip-installs .venv; test_quickstart.py runs the job; make test is this suite",
    ("docs/getting-started.md", "make quickstart"): "the same two make targets as the README's",
    ("docs/getting-started.md", "pip install"): "installs packages",
    ("docs/benchmarks.md", "make bench"): "the benchmark suite (hours); tests/test_benchmarks.py runs its smallest",
    (
        "docs/multi-gpu.md",
        "defaults.yaml --trainer.devices 4",
    ): "needs 4 GPUs; tests/e2e/test_ddp_all_features.py: CPU DDP",
    ("docs/multi-gpu.md", "torchrun"): "torchrun on several nodes",
    ("docs/multi-gpu.md", "#SBATCH"): "a SLURM batch script",
    ("docs/robustness.md", "#SBATCH"): "a SLURM batch script",
    ("docs/offline.md", "hf download"): "downloads from the Hugging Face hub and copies to another machine",
    ("docs/install.md", "pip install torch==2.14.1 torchvision"): "installs packages; .ci/installed.sh does it",
    ("docs/install.md", "pip download"): "downloads wheels for another machine",
    ("docs/tune.md", "CUDA_VISIBLE_DEVICES=1"): "one worker per GPU; test_tune_cli.py runs workers on a study",
    ("docs/tune.md", "--storage postgresql://"): "a PostgreSQL server: test_tune_cli.py under .ci/with-postgres",
}


@dataclass(frozen=True)
class Spec:
    """What a block needs beyond the generic substitutions, and what its page promises it does."""

    prelude: str = ""
    """Python run before the block: what the page's prose assumes exists (``model``, ``data``, a file)."""
    before: str = ""
    """A string of an earlier shell block of the same page whose commands run first, in the same folder."""
    prelude_block: str = ""
    """A string of another Python block of the same page whose code runs first (a method for its class)."""
    epilogue: str = ""
    """Python run after the block: checks of what the page says the block does."""
    subs: tuple[tuple[str, str], ...] = ()
    """Textual replacements in the block; each must match."""
    keep_epochs: bool = False
    """Keep the block's ``max_epochs`` (its callbacks act at later epochs); batches are still limited."""
    keep_backbone: bool = False
    """Keep the timm model names (construction only: no fit, ``pretrained=False``)."""
    output: tuple[str, ...] = ()
    """Strings the block's output must contain."""
    files: tuple[str, ...] = ()
    """Files (relative to the working directory) the page says the block writes."""
    xfail: str = ""
    """Why the block fails on a page this file may not fix (strict: the fix must remove the entry)."""
    fails_with: str = ""
    """With ``xfail``: text of the failure; a failure without it is a real failure."""
    slow: bool = False
    """The block takes long (a whole fit -> test -> predict -> export walk): run with the slow tests."""


_ONNX_FILE = (  # what the page's first block writes, and the photo its script reads when given none
    "import shutil\n"
    "from pathlib import Path\n"
    "from lit_transfer.export import export_onnx\n"
    f"export_onnx('{RUN}/checkpoints/best.ckpt', 'model.onnx')\n"
    "shutil.copy(sorted(Path('my_images/test/cat').glob('*.jpg'))[0], 'cat.jpg')\n"
)
_YOUR_MODEL_AND_DATA = (  # "add it yourself" to your own Trainer: a model and data of your own
    "from lit_transfer import TransferClassifier\n"
    "from lit_transfer.data import DigitsDataModule\n"
    "data = DigitsDataModule(classes=[5, 6, 7, 8, 9], shots_per_class=10)\n"
    "model = TransferClassifier('test_resnet', pretrained=False, num_classes=data.num_classes,\n"
    "                           class_names=data.class_names)\n"
)


def _report(*names: str) -> tuple[str, ...]:
    """Run-report files in the version folder of the block's first run (Lightning's default logger)."""
    return tuple(f"lightning_logs/version_0/{name}" for name in names)


# Per-block notes: (page, a string of the block) -> Spec. Blocks without one run with the generic substitutions.
SPECS: dict[tuple[str, str], Spec] = {
    ("docs/getting-started.md", "--ckpt_path last --trainer.max_epochs 20"): Spec(
        before="--model.backbone resnet18.a1_in1k",  # resumes, tests and predicts the fit of the block before
        slow=True,  # three commands
    ),
    ("docs/install.md", "lit-transfer recipes copy fine_tune my_fine_tune.yaml"): Spec(slow=True),  # three commands
    ("docs/getting-started.md", 'ImageFolderDataModule("my_images", data_config'): Spec(
        files=_report("learning_curves.png", "schedule.png", "epochs.csv", "steps.csv", "checkpoints")
    ),
    ("docs/index.md", "trainer.test(model, data)"): Spec(
        files=_report("learning_curves.png", "schedule.png", "confusion_matrix.png", "confusion_matrix.csv")
    ),
    ("docs/concepts/freezing.md", 'freeze="freeze_unfreeze")'): Spec(keep_backbone=True),
    ("docs/offline.md", "/models/resnet50_a1_in1k.safetensors"): Spec(
        subs=(("/models/resnet50_a1_in1k.safetensors", "weights/test_resnet.safetensors"),)
    ),
    ("docs/own-project.md", "class MyModel"): Spec(
        keep_epochs=True,  # OptimizerSwap acts at epoch 15
        epilogue=(
            "from torch.utils.data import DataLoader, TensorDataset\n"
            "images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))\n"
            "loader = DataLoader(TensorDataset(images, labels), batch_size=4)\n"
            "trainer.fit(MyModel(), loader)\n"
            "assert type(trainer.optimizers[0]).__name__ == 'SGD', trainer.optimizers[0]\n"
            "trainer.test(trainer.lightning_module, loader)\n"
        ),
        files=_report("learning_curves.png", "schedule.png", "confusion_matrix.png"),
    ),
    ("docs/own-project.md", "build_param_groups"): Spec(
        prelude_block="class MyModel",
        epilogue=(
            "MyModel.configure_optimizers = configure_optimizers\n"
            "optimizer = MyModel().configure_optimizers()\n"
            "names = [group['name'] for group in optimizer.param_groups]\n"
            "assert 'head' in names and len(set(group['lr'] for group in optimizer.param_groups)) > 1, names\n"
        ),
    ),
    ("docs/run-report.md", "trainer = Trainer(max_epochs=10, callbacks=[RunReport()])"): Spec(
        prelude=_YOUR_MODEL_AND_DATA,
        output=("Run summary (fit, 1 epochs", "final metrics", "Run summary (test)", "test metrics:", "report:"),
        files=_report(
            "learning_curves.png",
            "schedule.png",
            "epochs.csv",
            "steps.csv",
            "confusion_matrix.png",
            "confusion_matrix.csv",
        ),
    ),
    ("docs/run-report.md", "confusion_matrix=True,"): Spec(
        prelude="from lit_transfer.callbacks import RunReport\n"  # the page's first block imports it
    ),
    ("docs/run-report.md", "plot_learning_curves(rows"): Spec(
        subs=(("runs/digits/lightning_logs/version_0", RUN),),
        files=("curves_f1.png",),
    ),
    ("docs/lr-finder.md", "lit-transfer lr-find --config recipes/defaults.yaml"): Spec(
        output=("LR range test: suggested lr", "--model.optimizer.init_args.lr="),
        files=(
            "runs/defaults/lightning_logs/version_1/lr_find/loss_vs_lr.png",
            "runs/defaults/lightning_logs/version_1/lr_find/loss_vs_lr.csv",
        ),
    ),
    ("docs/lr-finder.md", "find_lr(model, data"): Spec(files=("lr_find/loss_vs_lr.png", "my_curve.png")),
    ("docs/lr-finder.md", "GroupLRFinder(num_steps=40"): Spec(output=("LR range test: suggested lr",)),
    ("docs/lr-finder.md", "lit-transfer lr_find"): Spec(
        files=("runs/fine_tune/lightning_logs/version_0/lr_find/loss_vs_lr.png",),
        slow=True,  # the page's first command runs `lr-find` in the default suite
    ),
    ("docs/export.md", 'export_torchscript("runs/defaults'): Spec(files=("model.onnx", "model.pt")),
    ("docs/multilabel.md", "python -m lit_transfer.demo.canvases"): Spec(
        output=("average precision per label (macro mAP",),
        files=("data/canvases/test.csv", "digits.onnx"),
        slow=True,
    ),
    ("docs/regression.md", "python -m lit_transfer.demo.canvases"): Spec(
        output=("sum: MAE=",), files=("data/canvases/test.csv", "digit_sum.onnx"), slow=True
    ),
    ("docs/segmentation.md", "lit-transfer test --config recipes/defaults.yaml --config recipes/segmentation"): Spec(
        output=("Predicted masks of",),
        files=(
            "data/digit_masks/classes.txt",
            "runs/segmentation/lightning_logs/version_0/test/per_class_iou.png",
            "runs/segmentation/lightning_logs/version_0/predict/masks/0000.png",
            "runs/segmentation/lightning_logs/version_0/predict/overlays/0000.png",
            "digit_masks.onnx",
        ),
        slow=True,
    ),
    ("docs/export.md", 'python -c "from lit_transfer.export import export_onnx'): Spec(files=("model.onnx",)),
    ("docs/segmentation.md", "--data SegmentationFolderDataModule --data.root my_masks"): Spec(
        slow=True  # draws a mask folder, then fits at 64 px; test_segmentation_cli.py runs the command by default
    ),
    ("docs/robustness.md", "--ckpt_path last --trainer.max_epochs 20"): Spec(
        slow=True  # a fit, then its resume; test_user_path.py and test_faults.py resume in the default suite
    ),
    ("docs/export.md", "session.run(None"): Spec(prelude=_ONNX_FILE, output=("cat.jpg ",)),
    ("docs/tune.md", "--n_trials 20\nlit-transfer fit"): Spec(
        subs=(("--n_trials 20", "--n_trials 1"),),  # one tiny trial, then the refit of the best
        output=("Best: trial", "Refit the best on the training data"),
        files=tuple(f"runs/defaults/tune/tune_space/{name}" for name in ("study.db", "trials.csv", "best.yaml")),
        slow=True,  # a trial, the refit of the best, then a fit
    ),
    ("docs/tune.md", "--folds 5"): Spec(
        subs=(("--n_trials 20", "--n_trials 1"), ("--folds 5", "--folds 2")),
        slow=True,  # one trial, two fits
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Collecting the blocks


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str

    @property
    def kind(self) -> str:
        return LANGUAGES[self.lang]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if not p.relative_to(ROOT).as_posix().startswith(NOT_PAGES)]


def collect_blocks() -> list[Block]:
    """The fenced blocks of every page in a runnable language, indented ones (in lists, admonitions) included."""
    blocks = []
    for path in _pages():
        page = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            opening = _FENCE.match(lines[i])
            if not opening:
                i += 1
                continue
            fence, indent = opening["fence"], opening["indent"]
            lang = (opening["info"].split() or [""])[0].lower().lstrip(".").strip("{}")
            body, j = [], i + 1
            while j < len(lines) and not (
                lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])
            ):
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            if lang in LANGUAGES:
                blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n"))
            i = j + 1
    return blocks


BLOCKS = collect_blocks()


def _entries(table: dict[tuple[str, str], object], block: Block) -> list[tuple[str, str]]:
    return [key for key in table if key[0] == block.page and key[1] in block.text]


def _spec(block: Block) -> Spec:
    keys = _entries(SPECS, block)
    return SPECS[keys[0]] if keys else Spec()


# ---------------------------------------------------------------------------------------------------------------
# Shell blocks


def _commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists (continuations joined, comments dropped)."""
    joined, pending = [], ""
    for line in block.text.splitlines():
        if block.lang == "console" and not pending:  # "$ command" lines; the others are output
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    commands = []
    for line in [*joined, pending]:
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def _runnable(words: list[str]) -> bool:
    if words[0] == "lit-transfer":
        return True
    if words[0] in ("python", "python3") and len(words) > 2:
        return words[1] == "-c" or (words[1] == "-m" and words[2].split(".")[0] == "lit_transfer")
    return False


_NOT_RUNS = ("recipes", "--version", "--help", "-h")
"""``lit-transfer`` commands that train nothing: no tiny-run overrides."""
_PLACEHOLDER = re.compile(r"path/to/(best|last)\.ckpt|<(best|last)\.ckpt>")


def _fill_placeholders(text: str, run: str = RUN) -> str:
    """``path/to/best.ckpt``, ``<best.ckpt>`` (and ``last``) -> a shared run's checkpoint in the working dir."""
    return _PLACEHOLDER.sub(lambda m: f"{run}/checkpoints/{m[1] or m[2]}.ckpt", text)


def _tiny_cli(args: list[str]) -> list[str]:
    """The tiny-run overrides appended to a ``lit-transfer`` command (later arguments win)."""
    extra = [*TINY, "--trainer.limit_test_batches=1", "--trainer.limit_predict_batches=1"]
    if _on_photos(args):
        extra += ["--data.image_size=32", "--data.num_workers=0"]
    if args[0] == "fit" and any(a.startswith("--ckpt_path") for a in args):
        extra.append("--trainer.max_epochs=2")  # a resume of a one-epoch run: one more epoch
    return extra


WEIGHTS = "weights/test_resnet.safetensors"
"""The weights file of the tiny backbone in each block's folder: what a documented ``--model.pretrained`` (or a
recipe's ``pretrained: true``) loads here, offline."""
RANDOM_BACKBONE = "frozen random features learn nothing"
"""The warning of a freezing policy on a backbone without pretrained weights: no documented command may print it."""


def _pretrained_weights(args: list[str], cwd: Path) -> list[str]:
    """``--model.pretrained`` of the local weights file, unless the command itself asks for random weights."""
    explicit = [
        a.split("=", 1)[1] if "=" in a else b
        for a, b in zip(args, [*args[1:], ""])
        if a.startswith("--model.pretrained")
    ]
    if not (cwd / WEIGHTS).is_file() or any(value.lower() == "false" for value in explicit):
        return []
    return [f"--model.pretrained={WEIGHTS}"]


def _on_photos(args: list[str]) -> bool:
    return "ImageFolderDataModule" in args or any(a.endswith("my_images.yaml") for a in args)


def _files(cwd: Path, pattern: str) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in cwd.glob(pattern)}


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _run_command(words: list[str], cwd: Path, runs: SharedRuns | None = None) -> str:
    """Run one shell-block command in ``cwd``; check its exit status and the files its subcommand promises.

    A placeholder checkpoint in a command on the photos is the shared photo run's (the CLI refuses a digits
    checkpoint for other classes).
    """
    placeholder = any(_PLACEHOLDER.search(w) for w in words)
    if _on_photos(words) and placeholder and runs is not None and not (cwd / PHOTO_RUN).exists():
        shutil.copytree(runs.photo_runs(), cwd / "runs" / "my_images")
    words = [_fill_placeholders(w, PHOTO_RUN if _on_photos(words) else RUN) for w in words]
    if words[0] == "lit-transfer":
        argv, cli_args = [str(LIT_TRANSFER), *words[1:]], words[1:]
    elif words[1] == "-m":  # the CLI (`python -m lit_transfer`), or a module's own entry point
        argv, cli_args = [sys.executable, *words[1:]], words[3:] if words[2] == "lit_transfer" else []
    else:
        argv, cli_args = [sys.executable, *words[1:]], []
    if cli_args and cli_args[0] not in _NOT_RUNS:
        _check_backbone_names(cli_args)
        argv += _tiny_cli(cli_args) + _pretrained_weights(cli_args, cwd)
    promises = _promises(cli_args)
    before = {name: _files(cwd, f"runs/**/{name}") for name in promises}
    result = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}: {shlex.join(words)}\n{output[-6000:]}"
    if _pretrained_weights(cli_args, cwd):
        assert RANDOM_BACKBONE not in output, f"{shlex.join(words)} froze a random backbone:\n{output[-3000:]}"
    subcommand = cli_args[0] if cli_args else ""
    for name, by in promises.items():
        if subcommand != by:
            continue
        written = [p for p, t in _files(cwd, f"runs/**/{name}").items() if before[name].get(p) != t]
        assert len(written) == 1, f"`{subcommand}` wrote {len(written)} {name} under {cwd / 'runs'}\n{output[-3000:]}"
        folder = written[0].parent
        if subcommand == "fit":  # runs/<name>/lightning_logs/version_N/checkpoints/
            assert folder.name == "checkpoints" and folder.parent.name.startswith("version_"), folder
            for promised in _FIT_FILES:
                assert list(folder.parent.glob(promised)), f"fit left no {promised} in {folder.parent}"
        else:  # into the evaluated run's <subcommand>/ folder, and says where
            assert folder.name == subcommand and folder.parent.name.startswith("version_"), folder
            where = (str(folder.relative_to(cwd)), str(folder))
            assert any(w in output for w in where), f"`{subcommand}` did not print {where[0]}\n{output[-3000:]}"
    return output


_PROMISES = {
    "best.ckpt": "fit",
    "last.ckpt": "fit",
    "confusion_matrix.png": "test",
    "confusion_matrix.csv": "test",
    "predictions.csv": "predict",
}
_TEST_REPORTS = {  # what `test` writes instead of the confusion matrix, for a recipe of another task
    "multilabel.yaml": ("label_ap.csv",),
    "regression.yaml": ("regression.csv", "predicted_vs_true.png"),
    "segmentation.yaml": ("per_class_iou.csv", "segmentation_samples.png"),
}
_MASK_WRITERS = ("segmentation.yaml",)  # `predict` writes predict/masks/<name>.png (the page's Spec), no CSV


def _promises(args: list[str]) -> dict[str, str]:
    """The files each subcommand promises (:data:`_PROMISES`), with the test report of the recipe's task."""
    recipe = next((r for r in _TEST_REPORTS if any(a.endswith(f"recipes/{r}") for a in args)), None)
    if recipe is None:
        return _PROMISES
    kept = {name: by for name, by in _PROMISES.items() if by != "test"}
    if recipe in _MASK_WRITERS:
        kept.pop("predictions.csv")
    return {**kept, **dict.fromkeys(_TEST_REPORTS[recipe], "test")}


_FIT_FILES = (
    "config.yaml",
    "metrics.csv",
    "events.out.tfevents.*",
    "learning_curves.png",
    "schedule.png",
    "epochs.csv",
    "steps.csv",
)
"""What docs/getting-started.md says a fit leaves in ``version_N/`` (besides ``checkpoints/``)."""


_HUB_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$")


def _check_backbone_names(args: list[str]) -> None:
    """A ``--model.backbone`` the tiny overrides replace must still be a name timm knows."""
    names = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--model.backbone"]
    names += [a.split("=", 1)[1] for a in args if a.startswith("--model.backbone=")]
    for name in names:
        assert _is_timm_name(name), f"--model.backbone {name} is not a timm model name"


def _is_timm_name(name: str) -> bool:
    import timm

    return timm.is_model(name) and ("." not in name or name in timm.list_pretrained(name))


# ---------------------------------------------------------------------------------------------------------------
# Python blocks


class _Tiny(ast.NodeTransformer):
    """Rewrite Trainer, TransferClassifier, timm.create_model and ImageFolderDataModule calls to tiny settings."""

    TRAINER = {
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "limit_test_batches": 1,
        "limit_predict_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.names: list[str] = []

    @staticmethod
    def _set(node: ast.Call, name: str, value: object, replace: bool = True) -> None:
        for kw in node.keywords:
            if kw.arg == name:
                if replace:
                    kw.value = ast.Constant(value)
                return
        node.keywords.append(ast.keyword(arg=name, value=ast.Constant(value)))

    def _backbone(self, node: ast.Call, keyword: str) -> None:
        target = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == keyword), None)
        if isinstance(target, ast.Constant) and isinstance(target.value, str) and _HUB_NAME.match(target.value):
            self.names.append(target.value)
            if not self.spec.keep_backbone:
                target.value = "test_resnet"
        pretrained = next((k for k in node.keywords if k.arg == "pretrained"), None)
        if pretrained is None or (isinstance(pretrained.value, ast.Constant) and pretrained.value.value is True):
            self._set(node, "pretrained", False)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name == "Trainer":
            if not self.spec.keep_epochs:
                self._set(node, "max_epochs", 1)
            for key, value in self.TRAINER.items():
                self._set(node, key, value)
        elif name == "TransferClassifier":
            self._backbone(node, "backbone")
        elif name == "create_model":
            self._backbone(node, "model_name")
        elif name == "ImageFolderDataModule":
            self._set(node, "image_size", 32, replace=False)
            self._set(node, "num_workers", 0, replace=False)
        return node


def _blocks_of(page: str, string: str) -> Block:
    matches = [b for b in BLOCKS if b.page == page and b.kind == "python" and string in b.text]
    assert len(matches) == 1, f"{len(matches)} Python blocks of {page} contain {string!r}"
    return matches[0]


def python_script(block: Block) -> str:
    """The script a Python block runs as: doctest sessions unchanged, code rewritten to tiny settings."""
    if block.text.lstrip().startswith(">>>"):
        return (
            "import doctest, sys\n"
            f"test = doctest.DocTestParser().get_doctest({block.text!r}, {{}}, {block.id!r}, {block.page!r}, "
            f"{block.line})\n"
            "runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)\n"
            "runner.run(test)\n"
            "sys.exit(1 if runner.failures or not runner.tries else 0)\n"
        )
    spec = _spec(block)
    text = block.text
    for old, new in spec.subs:
        assert old in text, f"{block.id}: the substitution {old!r} no longer matches; update SPECS"
        text = text.replace(old, new)
    text = _fill_placeholders(text)
    if spec.prelude_block:
        text = _blocks_of(block.page, spec.prelude_block).text + "\n" + text
    tree = ast.parse(spec.prelude + text + "\n" + spec.epilogue, filename=block.id)
    tiny = _Tiny(spec)
    tree = ast.fix_missing_locations(tiny.visit(tree))
    check = ""
    if tiny.names:  # the names the rewrite replaced must exist, with their pretrained tag
        check = (
            f"import timm\nfor _name in {sorted(set(tiny.names))!r}:\n"
            "    assert timm.is_model(_name) and ('.' not in _name or _name in timm.list_pretrained(_name)), _name\n"
        )
    return check + ast.unparse(tree) + "\n"


_SERVER = r'''
"""Import the heavy modules once, then run each requested script in a forked child: a fresh process per block."""
import json, os, runpy, sys, traceback

import torch, lightning.pytorch, timm, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
import lit_transfer, lit_transfer.callbacks, lit_transfer.data, lit_transfer.export, lit_transfer.plots
for optional in ("onnx", "onnxruntime", "cv2"):
    try:
        __import__(optional)
    except ImportError:
        pass

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            sys.argv = [request["script"], *request["args"]]
            sys.path[0] = request["cwd"]
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
            if exit.code is not None and not isinstance(exit.code, int):
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class PythonRunner:
    """A ``python`` that has imported torch, Lightning, timm and lit_transfer, forking one child per script."""

    def __init__(self, folder: Path) -> None:
        server = folder / "server.py"
        server.write_text(_SERVER)
        self.process = subprocess.Popen(
            [sys.executable, str(server)],
            cwd=folder,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = False  # the imports run meanwhile (while the shared run fits)

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer from the block runner within {timeout} s")
        line = self.process.stdout.readline()
        assert line, f"the block runner exited ({self.process.poll()})"
        return line

    def run(self, script: Path, cwd: Path, args: tuple[str, ...] = ()) -> tuple[int, str]:
        """Run ``script`` with ``cwd`` as working directory; return its exit status and output."""
        assert self.process.stdin is not None
        if not self.ready:
            assert json.loads(self._line(TIMEOUT_S)) == {"ready": True}
            self.ready = True
        log = cwd / "output.log"
        request = {"script": str(script), "cwd": str(cwd), "log": str(log), "args": list(args)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        pid = json.loads(self._line(30))["pid"]
        try:
            rc = json.loads(self._line(TIMEOUT_S))["rc"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._line(30)
            raise
        return rc, log.read_text(errors="replace") if log.exists() else ""

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes (cat, dog) of photo-like files of mixed sizes and modes, with val/, test/ and predict/."""
    root = make_photo_folder(tmp_path_factory.mktemp("photos") / "my_images", per_class=8, bad_files=False)
    for split in ("train", "val", "test"):
        for extra in ("fox", "owl"):
            shutil.rmtree(root / split / extra)
    return root


class SharedRuns:
    """Tiny fitted runs the blocks' folders copy: the CLI smoke test on the digits, and on demand the photos'."""

    def __init__(self, folder: Path, photos: Path) -> None:
        self.folder = folder
        (folder / "recipes").symlink_to(ROOT / "recipes")
        (folder / "data").mkdir()
        (folder / "data" / "my_images").symlink_to(photos, target_is_directory=True)
        _run_command(["lit-transfer", "fit", "--config", "recipes/defaults.yaml"], folder)
        assert (folder / RUN / "checkpoints" / "best.ckpt").is_file()
        self.digits = folder / "runs" / "defaults"

    def photo_runs(self) -> Path:
        """``runs/my_images`` of ``lit-transfer fit --config recipes/defaults.yaml --config recipes/my_images.yaml``."""
        if not (self.folder / PHOTO_RUN).is_dir():
            _run_command(
                ["lit-transfer", "fit", "--config", "recipes/defaults.yaml", "--config", "recipes/my_images.yaml"],
                self.folder,
            )
        return self.folder / "runs" / "my_images"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> SharedRuns:
    return SharedRuns(tmp_path_factory.mktemp("fitted"), photos)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``test_resnet`` weights file, as a user keeps on an offline machine."""
    import timm
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def python_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonRunner]:
    """Started first, so that its imports overlap the shared fit."""
    runner = PythonRunner(tmp_path_factory.mktemp("runner"))
    yield runner
    runner.close()


@pytest.fixture
def workdir(tmp_path: Path, photos: Path, fitted: SharedRuns, weights: Path) -> Path:
    """A user's project folder: the recipes, the photos under the names the docs use, a fitted run."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    for name in PHOTO_LINKS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(photos, target_is_directory=True)
    shutil.copytree(fitted.digits, tmp_path / "runs" / "defaults")
    (tmp_path / "weights").mkdir()
    shutil.copy(weights, tmp_path / "weights" / weights.name)
    return tmp_path


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_every_block_is_run_or_excluded() -> None:
    """A block is run or excluded (not both); every exclusion and note still matches a block."""
    assert BLOCKS, "no code blocks found in README.md and docs/"
    problems = []
    for block in BLOCKS:
        excluded, specs = _entries(EXCLUDED, block), _entries(SPECS, block)
        if len(excluded) + len(specs) > 1:
            problems.append(f"{block.id} matches several entries: {excluded + specs}")
        if excluded:
            continue
        if block.kind == "shell":
            commands = _commands(block)
            others = [shlex.join(c) for c in commands if not _runnable(c)]
            if others or not commands:
                problems.append(f"{block.id} runs {others or 'nothing'}: make it runnable or add it to EXCLUDED")
        else:
            try:
                ast.parse(python_script(block))
            except (SyntaxError, AssertionError) as error:
                problems.append(f"{block.id} does not compile: {error}")
    for table in (EXCLUDED, SPECS):
        for page, string in table:
            if not any(b.page == page and string in b.text for b in BLOCKS):
                problems.append(f"{page}: no block contains {string!r} any more; remove or update its entry")
    assert not problems, "\n".join(problems)


class KnownFailure(AssertionError):
    """A block fails the way its ``xfail`` entry says (any other failure stays a failure)."""


def _params(kind: str) -> list[object]:
    params = []
    for block in BLOCKS:
        if block.kind != kind or _entries(EXCLUDED, block):
            continue
        spec = _spec(block)
        marks = [pytest.mark.xfail(strict=True, raises=KnownFailure, reason=spec.xfail)] if spec.xfail else []
        if spec.slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _check(block: Block, cwd: Path, run: Callable[[], str]) -> None:
    """Run a block; check what it printed and wrote, and that an expected failure is the expected one."""
    spec = _spec(block)
    try:
        output = run()
        for expected in spec.output:
            assert expected in output, f"{block.id} did not print {expected!r}:\n{output[-3000:]}"
        for name in spec.files:
            assert (cwd / name).exists(), f"{block.id} did not write {name}:\n{output[-3000:]}"
    except AssertionError as error:
        if spec.xfail and spec.fails_with and spec.fails_with in str(error):
            raise KnownFailure(str(error)) from None
        raise


@pytest.mark.parametrize("block", _params("shell"))
def test_shell_block(block: Block, workdir: Path, fitted: SharedRuns) -> None:
    spec = _spec(block)
    earlier = [b for b in BLOCKS if spec.before and b.page == block.page and spec.before in b.text]
    if spec.before:
        assert len(earlier) == 1 and earlier[0].line < block.line, f"{block.id}: before={spec.before!r} is stale"

    text = block.text
    for old, new in spec.subs:
        assert old in text, f"{block.id}: the substitution {old!r} no longer matches; update SPECS"
        text = text.replace(old, new)
    substituted = Block(block.page, block.line, block.lang, text)

    def run() -> str:
        output = ""
        for words in [c for b in earlier for c in _commands(b)] + _commands(substituted):
            assert _runnable(words), f"{block.id}: cannot run {shlex.join(words)}; add the block to EXCLUDED"
            output += _run_command(words, workdir, fitted)
        return output

    _check(block, workdir, run)


@pytest.mark.parametrize("block", _params("python"))
def test_python_block(block: Block, workdir: Path, python_runner: PythonRunner) -> None:
    script = workdir / "block.py"
    script.write_text(python_script(block))

    def run() -> str:
        rc, output = python_runner.run(script, workdir)
        assert rc == 0, f"{block.id} exited {rc}:\n{textwrap.indent(script.read_text(), '    ')}\n{output[-6000:]}"
        return output

    _check(block, workdir, run)
