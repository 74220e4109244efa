"""The search space of ``lit-transfer tune``: a YAML file of config keys and their ranges or choices.

Each top-level key is a config key as the command line spells it (``model.optimizer.init_args.lr``,
``model.freeze``, ``data.train_transform``, ``trainer.max_epochs``); its value says what Optuna draws:

.. code-block:: yaml

    model.optimizer.init_args.lr: {low: 1.0e-4, high: 3.0e-2, log: true}   # float, log-uniform
    model.layer_decay: {low: 0.5, high: 1.0}                                 # float, uniform
    trainer.max_epochs: {low: 2, high: 8, step: 2}                           # int (both bounds are ints)
    model.freeze: {choices: [linear_probe, freeze_unfreeze, full]}           # categorical
    data.train_transform:                                                    # categorical, labelled values
      choices: {none: none, affine: [{class_path: albumentations.Affine, init_args: {rotate: [-10, 10]}}]}

A range is an int range when both bounds are ints (``step`` defaults to 1), else a float range (``log`` for a
log scale, or ``step`` for a grid). ``choices`` is a list of plain values (strings, numbers, booleans, null), or a
mapping from a label to any value (a list, a mapping: an augmentation pipeline, a policy with options): Optuna
draws the label, the trial gets the value. A trial's values reach the run as command-line overrides
(``--model.optimizer.init_args.lr=0.0031``), exactly as a user would type them after the same ``--config`` files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from lit_transfer.errors import is_number

__all__ = ["Param", "SearchSpace", "load_space"]

_GROUPS = ("model.", "data.", "trainer.")
_RANGE_KEYS = {"low", "high", "log", "step"}
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched config key.

    Attributes:
        key: The config key as the command line spells it (``model.optimizer.init_args.lr``).
        distribution: What Optuna draws.
        values: For labelled choices, the value of each label; empty otherwise.
    """

    key: str
    distribution: BaseDistribution
    values: Mapping[str, Any]

    def suggest(self, trial: BaseTrial) -> Any:
        """Draw this key's value for ``trial`` (the label's value for labelled choices)."""
        dist = self.distribution
        drawn: Any
        if isinstance(dist, CategoricalDistribution):
            drawn = trial.suggest_categorical(self.key, dist.choices)
        elif isinstance(dist, IntDistribution):
            drawn = trial.suggest_int(self.key, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            drawn = trial.suggest_float(self.key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:  # pragma: no cover (load_space builds only these three)
            raise TypeError(f"Unsupported distribution {dist!r}.")
        return self.value_of(drawn)

    def value_of(self, drawn: Any) -> Any:
        """The config value of a drawn parameter (a label becomes its value)."""
        return self.values[drawn] if self.values else drawn

    def flag(self, value: Any) -> str:
        """The command-line override that sets this key to ``value``.

        Example:
            >>> Param("model.layer_decay", FloatDistribution(0.5, 1.0), {}).flag(0.75)
            '--model.layer_decay=0.75'
            >>> Param("data.train_transform", CategoricalDistribution(["x"]), {"x": [{"a": 1}]}).flag([{"a": 1}])
            '--data.train_transform=[{"a": 1}]'
        """
        return f"--{self.key}={format_value(value)}"


def format_value(value: Any) -> str:
    """A value as the command line (jsonargparse) reads it: plain scalars as text, the rest as JSON.

    Example:
        >>> format_value(None), format_value(True), format_value(0.001), format_value("light"), format_value([1, 2])
        ('null', 'true', '0.001', 'light', '[1, 2]')
    """
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a search space file, in the file's order."""

    params: tuple[Param, ...]
    source: str

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Draw every key for ``trial``: ``{key: config value}``."""
        return {p.key: p.suggest(trial) for p in self.params}

    def flags(self, values: Mapping[str, Any]) -> list[str]:
        """The command-line overrides of ``{key: config value}`` (the keys of this space, in its order)."""
        return [p.flag(values[p.key]) for p in self.params if p.key in values]

    def values_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config values of a trial's drawn ``params`` (labels become their values)."""
        return {p.key: p.value_of(params[p.key]) for p in self.params if p.key in params}

    def extremes(self) -> list[list[str]]:
        """Two sets of overrides, every key at its low end (first choice), then its high end (last choice).

        Parsing both with the base config checks every key and value before the first trial runs.
        """
        ends: list[list[str]] = [[], []]
        for param in self.params:
            dist = param.distribution
            if isinstance(dist, CategoricalDistribution):
                drawn: tuple[Any, Any] = (dist.choices[0], dist.choices[-1])
            else:
                drawn = (dist.low, dist.high)  # type: ignore[attr-defined]
            for end, value in zip(ends, drawn):
                end.append(param.flag(param.value_of(value)))
        return ends


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and check a search space file.

    Args:
        path: A YAML file mapping config keys to ranges (``{low, high, log, step}``) or ``{choices: [...]}``.

    Returns:
        The space.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: Naming the file and the key, for anything else that is wrong with it.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(
            f"`--space` file {where!r} does not exist. Give a YAML search space such as recipes/tune_space.yaml."
        )
    with open(where, encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ValueError(f"`--space` file {where!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            f"`--space` file {where!r} must map config keys to ranges or choices, e.g."
            " `model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}`."
        )
    return SearchSpace(tuple(_param(where, str(key), spec) for key, spec in raw.items()), where)


def _param(where: str, key: str, spec: Any) -> Param:
    prefix = f"`--space` file {where!r}, key `{key}`"
    if not key.startswith(_GROUPS) or key.startswith("--"):
        raise ValueError(f"{prefix}: keys are `model.*`, `data.*` or `trainer.*` config keys, without `--`.")
    if not isinstance(spec, dict):
        raise ValueError(f"{prefix}: give `{{low: ..., high: ...}}` or `{{choices: [...]}}`, got {spec!r}.")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ValueError(f"{prefix}: `choices` takes no other setting, got {sorted(spec)}.")
        return _categorical(prefix, key, spec["choices"])
    unknown = set(spec) - _RANGE_KEYS
    if unknown or not {"low", "high"} <= set(spec):
        raise ValueError(f"{prefix}: a range has `low`, `high` and optionally `log` or `step`, got {sorted(spec)}.")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    numbers = (low, high) if step is None else (low, high, step)
    if any(not is_number(v) or not math.isfinite(v) for v in numbers):
        raise ValueError(f"{prefix}: `low`, `high` and `step` must be finite numbers, got {spec!r}.")
    if not low < high:
        raise ValueError(f"{prefix}: `low` must be below `high`, got low={low!r}, high={high!r}.")
    if log and (low <= 0 or step is not None):
        raise ValueError(f"{prefix}: a log range needs `low > 0` and no `step`, got {spec!r}.")
    if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
        return Param(key, IntDistribution(low, high, log=log, step=step or 1), {})
    return Param(key, FloatDistribution(float(low), float(high), log=log, step=step), {})


def _categorical(prefix: str, key: str, choices: Any) -> Param:
    if isinstance(choices, dict):
        if len(choices) < 1:
            raise ValueError(f"{prefix}: `choices` is empty.")
        labels = [str(label) for label in choices]
        return Param(key, CategoricalDistribution(labels), dict(zip(labels, choices.values())))
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"{prefix}: `choices` must be a non-empty list, got {choices!r}.")
    if not all(isinstance(c, _PLAIN) for c in choices):
        raise ValueError(
            f"{prefix}: list choices are plain values (strings, numbers, booleans, null); give a pipeline or a"
            " policy with options as a mapping from a label to the value: `choices: {label: value, ...}`."
        )
    plain: list[CategoricalChoiceType] = list(choices)
    return Param(key, CategoricalDistribution(plain), {})
