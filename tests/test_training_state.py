"""set_frozen_modes: eval mode exactly for the sub-trees whose parameters are all frozen, on real timm models."""

from __future__ import annotations

import random

import pytest
import timm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_transfer.freezing.layer_groups import layer_groups
from lit_transfer.training_state import set_frozen_modes


def _modes_by_definition(module: nn.Module, frozen: set[int], train_bn: bool) -> dict[str, bool]:
    """The rule read literally: list each sub-module's parameters; one without any follows its parent."""
    modes: dict[str, bool] = {}
    for name, sub in module.named_modules():
        params = [id(p) for p in sub.parameters()]
        if params:
            modes[name] = (isinstance(sub, _BatchNorm) and train_bn) or not all(p in frozen for p in params)
        else:
            modes[name] = modes.get(name.rpartition(".")[0], True)
    return modes


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext", "mobilenetv3_small_050"])
@pytest.mark.parametrize("train_bn", [False, True])
def test_modes_follow_the_rule_for_every_frozen_prefix_of_the_groups(name: str, train_bn: bool) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=3)
    groups = layer_groups(model)
    rng = random.Random(0)
    masks = [[i < k for i in range(len(groups))] for k in range(len(groups) + 1)]
    masks.append([rng.random() < 0.5 for _ in groups])  # not a prefix: any mix of frozen groups
    for mask in masks:
        frozen = {id(p) for group, flag in zip(groups, mask) if flag for p in group.params}
        model.train()
        set_frozen_modes(model, frozen, train_bn)
        got = {name: sub.training for name, sub in model.named_modules()}
        assert got == _modes_by_definition(model, frozen, train_bn), mask
