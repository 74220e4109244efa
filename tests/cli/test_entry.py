"""The command's entry point: ``--version`` and ``recipes`` answer without importing the training stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lit_transfer

HEAVY = ("torch", "lightning", "timm", "jsonargparse", "albumentations")


def test_version_and_recipes_import_no_training_stack() -> None:
    script = (
        "import sys\n"
        "from lit_transfer.cli import main\n"
        "main(['--version'])\n"
        "main(['recipes'])\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == f"lit-transfer {lit_transfer.__version__}"
    assert "Recipes shipped with lit-transfer" in result.stdout
    assert lines[-1] == "[]", lines[-1]


def test_a_trainer_subcommand_still_reaches_the_lightning_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_transfer.cli import main

    monkeypatch.setattr(sys, "argv", ["lit-transfer"])  # pytest's own arguments are not the command's
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--help"])
    assert stopped.value.code == 0
    assert "--trainer.max_epochs" in capsys.readouterr().out


def test_every_public_name_resolves_to_its_home_module() -> None:
    import lit_transfer.callbacks
    import lit_transfer.cli.app
    import lit_transfer.models

    assert lit_transfer.TransferClassifier is lit_transfer.models.TransferClassifier
    assert lit_transfer.SynchronizedStop is lit_transfer.callbacks.SynchronizedStop
    assert lit_transfer.TransferCLI is lit_transfer.cli.app.TransferCLI
    names = {}
    exec("from lit_transfer import *", names)
    assert set(lit_transfer.__all__) <= set(names) and set(lit_transfer.__all__) <= set(dir(lit_transfer))


def test_the_three_lists_of_public_names_agree() -> None:
    """``__all__``, the lazy lookup's map and the imports type checkers read name the same objects."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(lit_transfer))
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    typed = {
        alias.asname or alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == lit_transfer._HOMES
    assert set(lit_transfer.__all__) == {*lit_transfer._HOMES, "__version__"}


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="'TransferClasifier'"):
        lit_transfer.TransferClasifier  # noqa: B018
    with pytest.raises(ImportError):
        exec("from lit_transfer.cli import TransferClasifier", {})
