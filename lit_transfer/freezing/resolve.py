"""Policies by name: turn a policy object, name or plain-value config into a policy object."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from lit_transfer.freezing.auto import AutoFreeze
from lit_transfer.freezing.base import FreezingPolicy
from lit_transfer.freezing.policies import (
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    SurgicalFineTune,
    UnfreezeAtEpochs,
)

__all__ = ["POLICIES", "resolve_policy"]


POLICIES: dict[str, type[FreezingPolicy]] = {
    cls.name: cls
    for cls in (
        FullFineTune,
        LinearProbe,
        FreezeUnfreeze,
        GradualUnfreeze,
        UnfreezeAtEpochs,
        SurgicalFineTune,
        AutoFreeze,
    )
}
"""The policies by name (the names :func:`resolve_policy` accepts)."""


def resolve_policy(
    policy: FreezingPolicy | str | dict[str, Any] | None, train_bn: bool | None = None
) -> FreezingPolicy:
    """Turn a policy object, name or plain-value config into a policy object.

    Args:
        policy: A :class:`FreezingPolicy` (returned as it is: the caller's object is the one the run uses, so
            what it decides during the run, e.g. an :class:`AutoFreeze` plan, is visible on it), a name from
            :data:`POLICIES` (``"linear_probe"``), a config dict as written by :meth:`FreezingPolicy.to_config`
            (``{"policy": "freeze_unfreeze", "unfreeze_at_epoch": 3}``) or as a config file writes it
            (``{"class_path": "FreezeUnfreeze", "init_args": {"unfreeze_at_epoch": 3}}``), or ``None`` for
            :class:`FullFineTune`.
        train_bn: If given, sets the policy's ``train_bn``.

    Returns:
        The policy object.

    Raises:
        ValueError: For an unknown name (with the closest known names) or bad arguments.

    Example:
        >>> resolve_policy("freeze_unfreeze")
        FreezeUnfreeze(unfreeze_at_epoch=1, train_bn=False)
    """
    if policy is None:
        resolved: FreezingPolicy = FullFineTune()
    elif isinstance(policy, FreezingPolicy):
        resolved = policy
    elif isinstance(policy, str):
        resolved = _policy_class(policy)()
    elif isinstance(policy, dict) and "class_path" in policy:  # jsonargparse's form, kept as a dict by a union type
        resolved = _policy_by_class_path(str(policy["class_path"]))(**dict(policy.get("init_args") or {}))
    elif isinstance(policy, dict):
        args = dict(policy)
        name = args.pop("policy", None)
        if not isinstance(name, str):
            raise ValueError(f"A freezing-policy config needs a `policy` name, got {policy!r}.")
        resolved = _policy_class(name)(**args)
    else:
        raise ValueError(
            f"`freeze` must be a FreezingPolicy, a policy name or a config dict, got {type(policy).__name__}."
        )
    if train_bn is not None:
        resolved.train_bn = bool(train_bn)
    return resolved


def _policy_class(name: str) -> type[FreezingPolicy]:
    key = name.strip().lower().replace("-", "_")
    if key not in POLICIES:
        close = difflib.get_close_matches(key, POLICIES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown freezing policy {name!r}.{hint} Known policies: {', '.join(POLICIES)}.")
    return POLICIES[key]


def _policy_by_class_path(class_path: str) -> type[FreezingPolicy]:
    """The policy class a ``class_path`` names: a bare class name of :data:`POLICIES`, or ``module.Class``."""
    module, _, name = class_path.rpartition(".")
    found = next((cls for cls in POLICIES.values() if cls.__name__ == name), None)
    if module and found is None:
        found = getattr(importlib.import_module(module), name, None)  # a policy of the user's own, as the CLI found it
    if not (isinstance(found, type) and issubclass(found, FreezingPolicy)):
        known = ", ".join(cls.__name__ for cls in POLICIES.values())
        raise ValueError(f"`class_path` {class_path!r} names no freezing policy class. Known: {known}.")
    return found
