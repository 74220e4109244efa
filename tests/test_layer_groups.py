import pytest
import timm
import torch
from torch import nn

from lit_transfer.layer_groups import layer_groups, layout_fingerprint
from lit_transfer.optim import build_param_groups, layer_decay_scales, set_group_lrs

FAMILIES = ["test_resnet", "test_vit", "test_convnext", "test_efficientnet", "resnet10t"]


@pytest.mark.parametrize("name", FAMILIES)
def test_groups_partition_parameters_stem_to_head(name):
    model = timm.create_model(name, num_classes=3)
    groups = layer_groups(model)
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}
    assert groups[0].name == "stem" and groups[-1].name == "head"
    assert {id(p) for p in model.get_classifier().parameters()} <= {id(p) for p in groups[-1].params}
    names = [n for g in groups for n in g.param_names]
    order = [n for n, _ in model.named_parameters()]
    assert sorted(names) == sorted(order)
    assert len({g.name for g in groups}) == len(groups)


def test_vit_tokens_and_final_norm_are_grouped():
    groups = {n: g.name for g in layer_groups(timm.create_model("test_vit", num_classes=3)) for n in g.param_names}
    assert groups["cls_token"] == "stem" and groups["pos_embed"] == "stem"
    assert groups["norm.weight"] != "head"
    assert groups["head.weight"] == "head"


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(4, 4)


def test_non_timm_module_falls_back_to_children_and_extra_head():
    backbone = Plain()
    head = nn.Linear(4, 2)
    groups = layer_groups(backbone, extra=list(head.named_parameters()))
    assert [g.name for g in groups] == ["stem", "proj", "head"]
    assert groups[-1].params == tuple(head.parameters())


def test_fingerprint_is_plain():
    fp = layout_fingerprint(layer_groups(timm.create_model("test_resnet", num_classes=3)))
    assert fp[0] == ("stem", 9) and fp[-1] == ("head", 2)


def test_layer_decay_is_baked_into_each_group_lr():
    model = timm.create_model("test_resnet", num_classes=3)
    groups = layer_groups(model)
    optimizer = torch.optim.SGD(build_param_groups(groups, layer_decay=0.5), lr=0.1)
    set_group_lrs(optimizer)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    scales = layer_decay_scales(len(groups), 0.5)
    for group, scale in zip(groups, scales):
        assert lrs[group.name] == pytest.approx(0.1 * scale)
        assert lrs[f"{group.name}.no_decay"] == pytest.approx(0.1 * scale)
    # a torch scheduler keeps the per-group ratios
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    optimizer.step()
    scheduler.step()
    after = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert after["stem"] / after["head"] == pytest.approx(scales[0])


def test_param_groups_cover_every_parameter_once_by_identity():
    model = timm.create_model("test_vit", num_classes=3)
    param_groups = build_param_groups(layer_groups(model), no_weight_decay_names=model.no_weight_decay())
    ids = [id(p) for g in param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    no_decay = {g["name"] for g in param_groups if g.get("weight_decay") == 0.0}
    assert "stem.no_decay" in no_decay  # cls_token / pos_embed
    # two parameters with identical values are both present (compared by identity, never by value)
    assert sum(1 for g in param_groups for p in g["params"] if p.ndim == 1 and torch.all(p == 0)) >= 2


def test_frozen_lr_mult_only_scales_groups_frozen_at_start():
    groups = layer_groups(timm.create_model("test_resnet", num_classes=3))
    param_groups = build_param_groups(groups, frozen_at_start=len(groups) - 1, frozen_lr_mult=0.1, weight_decay=False)
    assert [g["lr_scale"] for g in param_groups] == [0.1] * (len(groups) - 1) + [1.0]


@pytest.mark.parametrize("decay", [0.0, 1.5, -0.1])
def test_bad_layer_decay(decay):
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_scales(4, decay)
