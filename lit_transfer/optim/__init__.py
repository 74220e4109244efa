"""How fast each layer group learns: param groups with layer decay, schedules, LR rescaling, batch-size LR rules."""

from lit_transfer.optim.batch_rules import scale_factor
from lit_transfer.optim.param_groups import (
    apply_lr_scales,
    build_param_groups,
    keep_group_lr_ratios,
    layer_decay_scales,
)
from lit_transfer.optim.schedules import WarmupCosine, WarmupCosineLR

__all__ = [
    "WarmupCosine",
    "WarmupCosineLR",
    "apply_lr_scales",
    "build_param_groups",
    "keep_group_lr_ratios",
    "layer_decay_scales",
    "scale_factor",
]
