"""What a resumed ``fit`` may change, in one sentence: it continues the run as it was, only longer.

``fit --ckpt_path`` restores the model, the optimizer (its class, its learning rates, its state), the schedule, the
freezing policy's progress and the DataModule's batch size from the checkpoint. So:

* **refused** (exit 2, naming the setting, the value asked for and the run's value): a different value *on the
  command line* for a model argument the checkpoint records (``--model.freeze``, ``--model.drop_rate``, ...), for
  the optimizer or LR scheduler (``--model.optimizer.init_args.lr``), or for ``--data.batch_size``. To train on with
  other settings, start a new ``fit`` from the checkpoint's weights: ``--model.pretrained path/to/last.ckpt``;
* **applied, said in one line**: a longer run (``--trainer.max_epochs``, ``--trainer.max_steps``; the warmup-cosine
  schedule is re-planned for the new length) and ``--model.compile`` / ``--model.channels_last`` (speed only);
* **taken from the run, said in one line**: a batch size, optimizer or scheduler that only a config file sets
  differently (a shared recipe, the defaults) is replaced by the run's own (from its ``config.yaml``, else from
  the checkpoint), so the new ``config.yaml`` records what the run really uses;
* **refused**: a ``max_epochs`` (or ``max_steps``) the checkpoint has already reached: the fit would train nothing.

The optimizer and scheduler are compared with the run's ``config.yaml`` (beside ``checkpoints/``); a checkpoint moved
away from its run folder is checked for everything else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.cli.arguments import command_line_value
from lit_transfer.cli.run_files import run_dir_of

__all__ = ["check_resume", "epochs_done", "given_keys"]

_NOT_CHECKED = {"backbone", "pretrained", "num_classes", "class_names", "num_outputs", "target_names", "target_stats"}
"""Model arguments checked elsewhere (the backbone), or linked from the data (checked by the links)."""
_SPEED_ONLY = ("compile", "channels_last")
"""Model arguments that change how fast, never what, a run computes: a resume may change them."""
_PLANNED = ("optimizer", "lr_scheduler")


def given_keys(argv: list[str], group: str) -> dict[str, str]:
    """The first-level keys of ``group`` that ``argv`` sets, with the flag that sets each.

    Example:
        >>> given_keys(["--model.freeze", "x", "--model.optimizer.init_args.lr=0.1", "--data.batch_size", "8"], "model")
        {'freeze': '--model.freeze', 'optimizer': '--model.optimizer.init_args.lr'}
    """
    found: dict[str, str] = {}
    prefix = f"--{group}."
    for arg in argv:
        if not arg.startswith(prefix):
            continue
        flag = arg.split("=", 1)[0]
        key = flag[len(prefix) :].removeprefix("init_args.").split(".", 1)[0]
        if key and key not in ("class_path", "help"):
            found.setdefault(key, flag)
    return found


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """How many epochs the checkpoint has finished (a mid-epoch checkpoint: the epochs before the one it stopped in)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    if isinstance(progress, dict) and "processed" in progress:
        return int(progress["processed"])
    return int(checkpoint.get("epoch", -1)) + 1


def _plain(value: Any) -> Any:
    if isinstance(value, Namespace):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _namespace(value: Any) -> Any:
    if isinstance(value, dict):
        return Namespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def _policy(value: Any, train_bn: Any = None) -> Any:
    """A freezing policy's plain config (``{"policy": ..., ...}``) for any form ``freeze`` takes; else the value."""
    from lit_transfer.freezing import resolve_policy

    try:
        return resolve_policy(_plain(value), train_bn=train_bn).to_config()
    except (ValueError, TypeError):
        return _plain(value)


def _show(value: Any) -> str:
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _refuse(flag: str, given: Any, saved: Any, ckpt_path: str, what: str) -> ValueError:
    return ValueError(
        f"`{flag}` asks for {what} {_show(given)}, but the run in {ckpt_path!r} trained with {_show(saved)}. A resumed"
        f" fit continues the run as it was (its optimizer, schedule, freezing and batch size come from the"
        f" checkpoint): drop `{flag}`, or start a new fit from these weights with `--model.pretrained {ckpt_path}`"
        " instead of `--ckpt_path`."
    )


def _run_config(ckpt_path: str) -> dict[str, Any] | None:
    """The ``config.yaml`` of the run the checkpoint belongs to (``fit``'s settings), or ``None``."""
    run = run_dir_of(ckpt_path)
    path = run / "config.yaml" if run is not None else None
    if path is None or not path.is_file():
        return None
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return content if isinstance(content, dict) else None


def _section(config: dict[str, Any] | None, group: str) -> dict[str, Any]:
    value = (config or {}).get(group) or {}
    if isinstance(value, dict) and isinstance(value.get("init_args"), dict):
        return value["init_args"]
    return value if isinstance(value, dict) else {}


def _check_model(sub: Namespace, model_flags: dict[str, str], hparams: dict[str, Any], ckpt_path: str) -> list[str]:
    """Refuse a model argument on the command line that differs from the checkpoint's.

    Returns:
        The speed-only arguments that change (applied after the checkpoint's hyper-parameters).
    """
    init_args = sub.model.get("init_args") if isinstance(sub.get("model"), Namespace) else None
    if init_args is None:
        return []
    changed: list[str] = []
    for key, flag in model_flags.items():
        if key in _NOT_CHECKED or key in _PLANNED or key not in hparams or key not in init_args:
            continue
        given, saved = init_args.get(key), hparams[key]
        if key == "freeze":
            given, saved = _policy(given, init_args.get("train_bn")), _policy(saved)
        if _plain(given) == _plain(saved):
            continue
        if key in _SPEED_ONLY:
            changed.append(f"model.{key}={_show(given)} (was {_show(saved)})")
            continue
        what = "the freezing policy" if key == "freeze" else f"`model.{key}`"
        raise _refuse(flag, given, saved, ckpt_path, what)
    return changed


def _differences(given: Any, saved: Any) -> list[str]:
    """``class_path`` and ``init_args`` entries where ``given`` differs from ``saved`` (keys both have)."""
    given, saved = _plain(given), _plain(saved)
    if not isinstance(given, dict) or not isinstance(saved, dict):
        return [] if given == saved else [f"{_show(given)} vs {_show(saved)}"]
    found = []
    if given.get("class_path") != saved.get("class_path"):
        found.append(f"class {given.get('class_path')} vs {saved.get('class_path')}")
    given_args, saved_args = given.get("init_args") or {}, saved.get("init_args") or {}
    for key in sorted(set(given_args) & set(saved_args)):
        if given_args[key] != saved_args[key]:
            found.append(f"{key} {_show(given_args[key])} vs {_show(saved_args[key])}")
    return found


def _check_planned(
    sub: Namespace, model_flags: dict[str, str], run_config: dict[str, Any] | None, ckpt_path: str
) -> list[str]:
    """Refuse an optimizer or scheduler flag that differs from the run's; take the run's over a config file's."""
    init_args = sub.model.get("init_args") if isinstance(sub.get("model"), Namespace) else None
    saved_model = _section(run_config, "model")
    adopted: list[str] = []
    if init_args is None or run_config is None:
        return adopted
    for key in _PLANNED:
        if key not in saved_model or key not in init_args:
            continue
        given, saved = init_args.get(key), saved_model[key]
        differences = _differences(given, saved)
        if not differences:
            continue
        if key in model_flags:
            raise ValueError(
                f"`{model_flags[key]}` changes the {key.replace('_', ' ')} of the run in {ckpt_path!r}"
                f" ({'; '.join(differences)}; asked for vs the run's). A resumed fit restores the run's {key} and its"
                f" state from the checkpoint: drop `{model_flags[key]}`, or start a new fit from these weights with"
                f" `--model.pretrained {ckpt_path}` instead of `--ckpt_path`."
            )
        init_args[key] = _namespace(saved)
        adopted.append(f"model.{key} ({'; '.join(differences)}: the config's vs the run's)")
    return adopted


def _saved_batch_size(checkpoint: dict[str, Any], run_config: dict[str, Any] | None, data_class: str) -> Any:
    configured = _section(run_config, "data").get("batch_size")
    if configured is not None:
        return configured
    state = checkpoint.get(data_class.rsplit(".", 1)[-1])
    return state.get("batch_size") if isinstance(state, dict) else None


def _check_batch_size(
    sub: Namespace, checkpoint: dict[str, Any], run_config: dict[str, Any] | None, argv: list[str], ckpt_path: str
) -> list[str]:
    data = sub.get("data")
    init_args = data.get("init_args") if isinstance(data, Namespace) else None
    if init_args is None or "batch_size" not in init_args:
        return []
    saved = _saved_batch_size(checkpoint, run_config, str(data.get("class_path") or ""))
    given = init_args.get("batch_size")
    if saved is None or given == saved:
        return []
    typed = command_line_value(argv, "data", "batch_size")
    if typed is not None and typed[1] is not None and typed[1].strip() == str(given):  # the flag set it, not a file
        raise _refuse(typed[0], given, saved, ckpt_path, "a batch size of")
    init_args.batch_size = saved
    return [f"data.batch_size={saved} (the config says {given})"]


def _check_length(sub: Namespace, checkpoint: dict[str, Any], run_config: dict[str, Any] | None, ckpt: str) -> str:
    """Refuse a length the checkpoint has reached; describe the length this resume trains to."""
    trainer = sub.get("trainer") or Namespace()
    done, step = epochs_done(checkpoint), int(checkpoint.get("global_step", 0))
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if max_epochs is None and max_steps in (None, -1):
        max_epochs = 1000  # Lightning's default
    if max_epochs not in (None, -1) and int(max_epochs) <= done:
        raise ValueError(
            f"The checkpoint {ckpt!r} has finished {done} epoch(s) and `trainer.max_epochs` is {max_epochs}: this fit"
            f" would train nothing. Pass a larger `--trainer.max_epochs` (e.g. {done + 1} or more) to continue the"
            f" run, or evaluate it with `lit-transfer validate` / `test --ckpt_path {ckpt}`."
        )
    if max_steps not in (None, -1) and int(max_steps) <= step:
        raise ValueError(
            f"The checkpoint {ckpt!r} has taken {step} optimizer steps and `trainer.max_steps` is {max_steps}: this"
            " fit would train nothing. Pass a larger `--trainer.max_steps` to continue the run."
        )
    planned = _section(run_config, "trainer").get("max_epochs")
    length = f"max_epochs={max_epochs}" if max_epochs not in (None, -1) else f"max_steps={max_steps}"
    if planned is not None and max_epochs not in (None, -1) and int(planned) != int(max_epochs):
        length += f" (the run was planned for {planned}; the LR schedule follows the new length)"
    return f"continues from {done} finished epoch(s) to {length}"


def check_resume(sub: Namespace, argv: list[str], checkpoint: dict[str, Any], ckpt_path: str) -> list[str]:
    """Check a ``fit --ckpt_path`` against the checkpoint; adopt the run's settings; say what this resume does.

    Called before the checkpoint's hyper-parameters are applied to the config (LightningCLI does that next), so
    ``sub`` still holds what was asked for. See the module docstring for the rules.

    Args:
        sub: The ``fit`` subcommand's config (changed in place where the run's own settings are adopted).
        argv: The command line, to tell a flag from a config file's value.
        checkpoint: The checkpoint, loaded with ``weights_only=True``.
        ckpt_path: Its path, for messages.

    Returns:
        The speed-only model arguments to apply after the checkpoint's hyper-parameters (``"compile"``, ...).

    Raises:
        ValueError: A setting that cannot change mid-run is asked to, or the run would train nothing.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    run_config = _run_config(ckpt_path)
    model_flags = given_keys(argv, "model")
    length = _check_length(sub, checkpoint, run_config, ckpt_path)
    speed = _check_model(sub, model_flags, hparams, ckpt_path)
    adopted = _check_planned(sub, model_flags, run_config, ckpt_path)
    adopted += _check_batch_size(sub, checkpoint, run_config, argv, ckpt_path)
    line = f"Resuming {Path(ckpt_path)}: training {length}"
    if speed:
        line += "; changed (speed only): " + ", ".join(speed)
    if adopted:
        line += "; the run's own settings kept: " + ", ".join(adopted)
    rank_zero_info(line + ".")
    return [entry.split("=", 1)[0].removeprefix("model.") for entry in speed]
