"""Which parameters train when: freezing policies, ``AutoFreeze`` and timm layer groups.

Policies are pure functions of the epoch (no Trainer); :class:`~lit_transfer.callbacks.LayerFreezing` applies them.
The groups come from :func:`lit_transfer.freezing.layer_groups.layer_groups` (timm's ``group_matcher``).
"""

from lit_transfer.freezing.auto import AutoFreeze, AutoFreezePlan
from lit_transfer.freezing.base import FreezingPolicy, mask_depth
from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.freezing.policies import (
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    SurgicalFineTune,
    UnfreezeAtEpochs,
)
from lit_transfer.freezing.resolve import POLICIES, resolve_policy

__all__ = [
    "POLICIES",
    "AutoFreeze",
    "AutoFreezePlan",
    "FreezeUnfreeze",
    "FreezingPolicy",
    "FullFineTune",
    "GradualUnfreeze",
    "LayerGroup",
    "LinearProbe",
    "SurgicalFineTune",
    "UnfreezeAtEpochs",
    "mask_depth",
    "resolve_policy",
]
