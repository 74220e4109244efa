"""The shipped recipes: ``--config recipes/NAME.yaml`` from any folder, ``lit-transfer recipes`` list and copy.

Every command runs the real console script in a subprocess, in an empty folder outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from lit_transfer.cli.recipes import recipe_summary, recipes_dir, resolve_config_args, shipped_recipes

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(LIT_TRANSFER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


_COMMANDS = {
    "help": ("--help",),
    "fit-help": ("fit", "--help"),
    "fit-help-all": ("fit", "--help-all"),
    "version": ("--version",),
    "lr-find-help": ("lr-find", "--help"),
    "lr_find-help": ("lr_find", "--help"),
    "list": ("recipes",),
    "documented": ("fit", "--config", "recipes/defaults.yaml", "--config", "recipes/fine_tune.yaml", "--print_config"),
    "missing": ("fit", "--config", "recipes/no_such_recipe.yaml", "--print_config"),
    "tune-space": (
        "tune",
        "--config",
        "recipes/defaults.yaml",
        "--space",
        "recipes/tune_space.yaml",
        "--n_trials",
        "0",
    ),
    "copy-unknown": ("recipes", "copy", "fine_tuning"),
    "copy-out": ("recipes", "copy", "fine_tune.yaml", "out/mine.yaml"),
}
"""Independent commands, run at once in one empty folder outside the repository."""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("elsewhere")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(_run, cwd, *args) for key, args in _COMMANDS.items()}
    return {key: future.result() for key, future in futures.items()}


def test_the_package_ships_every_recipe_of_the_repository() -> None:
    shipped = {name: path.read_bytes() for name, path in shipped_recipes().items()}
    source = {path.stem: path.read_bytes() for path in sorted((REPO / "recipes").glob("*.yaml"))}
    assert shipped == source
    assert recipes_dir().name == "recipes" and recipes_dir().parent.name == "lit_transfer"


def test_a_missing_recipes_path_resolves_to_the_shipped_file_and_a_users_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    notes: list[str] = []
    argv = ["fit", "--config", "recipes/defaults.yaml", "--config=linear_probe.yaml", "-c", "mine/defaults.yaml"]
    resolved = resolve_config_args(argv, notes.append)
    assert resolved[2] == str(shipped_recipes()["defaults"])
    assert resolved[3] == f"--config={shipped_recipes()['linear_probe']}"
    assert resolved[5] == "mine/defaults.yaml"  # another folder's file is the parser's to find or refuse
    assert len(notes) == 2 and "recipes/defaults.yaml" in notes[0] and str(shipped_recipes()["defaults"]) in notes[0]
    with pytest.raises(
        ValueError, match=r"`--config recipes/fine_tuning\.yaml`: no such file.*`recipes/fine_tune\.yaml`"
    ):
        resolve_config_args(["fit", "--config", "recipes/fine_tuning.yaml"], notes.append)
    assert resolve_config_args(["fit", "-c", "auto"], notes.append)[2] == str(shipped_recipes()["auto"])
    space = resolve_config_args(["tune", "--space", "recipes/tune_space.yaml", "--space=tune_space"], notes.append)
    assert space[2] == str(shipped_recipes()["tune_space"]) and space[3] == f"--space={shipped_recipes()['tune_space']}"
    with pytest.raises(
        ValueError, match=r"`--space recipes/tune_spaces\.yaml`: .*Did you mean `recipes/tune_space\.yaml`"
    ):
        resolve_config_args(["tune", "--space", "recipes/tune_spaces.yaml"], notes.append)
    inline = '{"trainer": {"max_epochs": 1}}'  # a YAML string given inline is the parser's
    assert resolve_config_args(["fit", "--config", inline], notes.append)[2] == inline
    assert resolve_config_args(["fit", "--config", "mine/nope.yaml"], notes.append)[2] == "mine/nope.yaml"
    assert len(notes) == 5

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "defaults.yaml").write_text("trainer:\n  max_epochs: 7\n")
    assert resolve_config_args(["--config", "recipes/defaults.yaml"], notes.append)[1] == "recipes/defaults.yaml"
    assert len(notes) == 5


def test_the_documented_config_paths_work_from_any_folder(ran: dict) -> None:
    result = ran["documented"]
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["init_args"]["freeze"]["init_args"]["unfreeze_at_epoch"] == 2  # fine_tune.yaml over defaults
    lines = [line for line in result.stderr.splitlines() if "shipped with the package" in line]
    assert len(lines) == 2, result.stderr
    # the package the console script imports (this tree's, or an installed copy when the tests run from an sdist)
    assert lines[0].endswith("lit_transfer/recipes/defaults.yaml") and lines[1].endswith("recipes/fine_tune.yaml")

    missing = ran["missing"]
    last = missing.stderr.strip().splitlines()[-1]
    assert missing.returncode == 2 and "`--config recipes/no_such_recipe.yaml`: no such file in this folder" in last
    assert "`lit-transfer recipes` lists the shipped recipes" in last


def test_the_documented_tune_command_finds_the_shipped_search_space_from_any_folder(ran: dict) -> None:
    result = ran["tune-space"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recipes/tune_space.yaml is not in this folder; using the recipe shipped with the package" in result.stderr
    assert "Study 'tune_space': 0 trials" in result.stdout + result.stderr


def test_recipes_lists_them_and_copies_one_out(ran: dict) -> None:
    listed = ran["list"]
    assert listed.returncode == 0, listed.stderr
    for name, path in shipped_recipes().items():
        assert any(line.split()[:1] == [name] and recipe_summary(path) in line for line in listed.stdout.splitlines())
    unknown = ran["copy-unknown"]
    assert unknown.returncode == 2 and "fine_tune" in unknown.stderr.strip().splitlines()[-1]
    copied = ran["copy-out"]
    assert copied.returncode == 0 and "out/mine.yaml" in copied.stdout, copied.stderr


@pytest.mark.slow
def test_a_copied_recipe_is_what_the_same_command_then_reads(tmp_path: Path) -> None:
    copied = _run(tmp_path, "recipes", "copy", "defaults")
    assert copied.returncode == 0, copied.stderr
    mine = tmp_path / "recipes" / "defaults.yaml"
    assert mine.read_bytes() == shipped_recipes()["defaults"].read_bytes()
    mine.write_text(mine.read_text().replace("max_epochs:", "max_epochs: 7 #"))

    printed = _run(tmp_path, "fit", "--config", "recipes/defaults.yaml", "--print_config")
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert yaml.safe_load(printed.stdout)["trainer"]["max_epochs"] == 7
    assert "shipped with the package" not in printed.stderr

    again = _run(tmp_path, "recipes", "copy", "defaults")
    assert again.returncode == 2 and "--force" in again.stderr.strip().splitlines()[-1]


def test_help_names_the_package_and_its_commands(ran: dict) -> None:
    main, fit, full = ran["help"], ran["fit-help"], ran["fit-help-all"]
    for result in (main, fit, full):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Lightning Trainer command line tool" not in result.stdout
    assert "transfer learning on small image datasets" in main.stdout
    assert "lit-transfer recipes" in main.stdout and "lr-find" in main.stdout
    assert "lr_find " not in main.stdout.split("Available subcommands:")[1].split("Other commands")[0]

    text = fit.stdout
    assert text.index("\nModel:") < text.index("\nData:") < text.index("\nCheckpoint:") < text.index("\nTrainer (")
    assert "--model.backbone" in text and "--data.root" in text and "on_exception.ckpt" in text
    assert "hpc" not in text and "registry" not in text  # Lightning's ckpt_path keywords this CLI does not use
    assert len(text.splitlines()) < 200
    assert "--trainer.gradient_clip_val" in full.stdout and "--trainer.gradient_clip_val" not in text


def test_version_and_lr_find_spelled_both_ways(ran: dict) -> None:
    from lit_transfer import __version__

    version = ran["version"]
    assert version.returncode == 0 and version.stdout.strip() == f"lit-transfer {__version__}"
    assert __version__ != "0+unknown"
    for spelling in ("lr-find", "lr_find"):
        result = ran[f"{spelling}-help"]
        assert result.returncode == 0 and "lit-transfer [options] lr-find" in result.stdout, result.stderr


@pytest.mark.parametrize("args", [("recipes",), ("fit", "--help"), ("--version",)])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    """``lit-transfer recipes | head``: the reader closes early; no traceback, the status a shell gives ``cat``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [str(LIT_TRANSFER), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes anything: its first write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) in (0, 141)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
