"""Which features stay fixed while only a timm backbone's head trains, across families, and the guard on them."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from lit_transfer.freezing.layer_groups import layer_groups
from lit_transfer.models.frozen_features import TrunkFeatures, trains_classifier_only, trains_head_group_only

# The head group is the classifier alone (ResNet, ViT, EfficientNet), or holds layers of its own after the pooling
# (ConvNeXt's `head.norm`, MobileNetV3's `conv_head`).
FAMILIES = {
    "test_resnet": 32,
    "test_vit": 160,
    "test_efficientnet": 32,
    "test_convnext": 32,
    "mobilenetv3_small_050": 32,
}


def _head_only(name: str) -> nn.Module:
    """The state LayerFreezing leaves a head-only phase in: head group trainable and in training mode, rest frozen."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3, drop_rate=0.2)
    head = {id(p) for p in layer_groups(model)[-1].params}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    model.eval()
    for module in model.modules():
        params = list(module.parameters())
        if params and all(id(p) in head for p in params):
            module.train()
    model.training = True  # functional dropout in `forward_head` (MobileNetV3) follows the model's own flag
    return model


@pytest.mark.parametrize("name", list(FAMILIES))
def test_head_outputs_on_trunk_features_are_the_models_outputs(name: str) -> None:
    model = _head_only(name)
    size = FAMILIES[name]
    x = torch.randn(4, 3, size, size)
    assert trains_head_group_only(model)
    features = TrunkFeatures(model)(x)
    assert model.training  # the extraction leaves every module's mode as it was
    torch.manual_seed(1)
    on_features = model.forward_head(features)
    torch.manual_seed(1)
    on_images = model(x)  # the same dropout draws: the trunk runs in eval mode and draws none
    torch.testing.assert_close(on_features, on_images, rtol=1e-5, atol=1e-6)
    head_has_more_than_classifier = name in ("test_convnext", "mobilenetv3_small_050")
    assert trains_classifier_only(model) is not head_has_more_than_classifier


@pytest.mark.parametrize("name", ["test_convnext", "mobilenetv3_small_050"])
def test_a_trainable_or_random_module_before_the_head_is_not_head_only(name: str) -> None:
    model = _head_only(name)
    stem = layer_groups(model)[0].params[0]
    stem.requires_grad_(True)
    assert not trains_head_group_only(model)
    stem.requires_grad_(False)
    assert trains_head_group_only(model)
    random_module = next(m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.Dropout)) and not m.training)
    random_module.train()  # a batch- or RNG-dependent layer before the head: its output changes from step to step
    assert not trains_head_group_only(model)


def test_trunk_features_refuse_a_forward_features_that_trains() -> None:
    """The first batch's check names the module: features computed once would miss its updates."""
    model = _head_only("test_convnext")
    model.stem[0].weight.requires_grad_(True)  # as if a head-group layer ran inside `forward_features`
    extract = TrunkFeatures(model)
    with pytest.raises(ValueError, match=r"in ConvNeXt it runs stem\.0, which train"):
        extract(torch.randn(2, 3, 32, 32))
    model.stem[0].weight.requires_grad_(False)
    assert extract(torch.randn(2, 3, 32, 32)).ndim == 4 and extract.checked
