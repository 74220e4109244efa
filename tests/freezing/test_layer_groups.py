import pytest
import timm
import torch
from torch import nn

from lit_transfer.freezing.layer_groups import layer_groups, layout_fingerprint
from lit_transfer.optim.param_groups import apply_lr_scales, build_param_groups, layer_decay_scales

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
    apply_lr_scales(optimizer)
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


# ------------------------------------------------------------------------------- fallbacks and their messages
@pytest.fixture
def infos(monkeypatch):
    """The info lines `layer_groups` prints on rank zero."""
    lines: list[str] = []
    monkeypatch.setattr("lit_transfer.freezing.layer_groups.rank_zero_info", lines.append)
    return lines


def _check_partition(model, groups):
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_a_timm_family_without_coarse_groups_uses_its_fine_groups(infos):
    model = timm.create_model("rdnet_tiny", num_classes=3)  # timm: "coarse grouping is not implemented for RDNet"
    with pytest.raises(AssertionError, match="coarse grouping is not implemented"):
        model.group_matcher(coarse=True)
    groups = layer_groups(model)
    _check_partition(model, groups)
    assert [g.name for g in groups] == ["stem", *[f"dense_stages.{i}" for i in range(7)], "head"]
    assert len(infos) == 1
    assert "RDNet has no coarse layer groups in timm" in infos[0] and "fine groups" in infos[0]
    assert [g.name for g in layer_groups(model, coarse=False)] == [g.name for g in groups]


@pytest.mark.parametrize(
    ("name", "kind"), [("pit_ti_224", "PoolingVisionTransformer"), ("poolformer_s12", "MetaFormer")]
)
def test_a_timm_model_without_group_matcher_is_not_called_a_non_timm_model(infos, name, kind):
    model = timm.create_model(name, num_classes=3)
    groups = layer_groups(model)
    _check_partition(model, groups)
    assert groups[-1].name == "head"
    (line,) = infos
    assert "is not a timm model" not in line
    assert line.startswith(f"{kind} has no `group_matcher`")
    assert f"its layer groups are its top-level children, in definition order ({len(groups)} groups:" in line


def test_a_plain_module_names_its_top_level_children(infos):
    layer_groups(Plain())
    assert infos == [
        "Plain has no `group_matcher` (the timm hook that lists a model's layer groups): its layer groups are its"
        " top-level children, in definition order (2 groups: features, proj)."
    ]


# ------------------------------------------------------------------------------------- one source of truth
def test_the_classifier_groups_once_and_everyone_reads_its_groups():
    from freeze_helpers import PlainModule

    from lit_transfer import TransferClassifier
    from lit_transfer.freezing.layer_groups import module_layer_groups

    model = TransferClassifier("test_convnext", num_classes=3, pretrained=False)
    groups = model.layer_groups
    assert model.layer_groups is groups  # computed once
    assert module_layer_groups(model) is groups
    assert module_layer_groups(model, coarse=True) is groups  # asks for what the module has
    with pytest.raises(ValueError, match=r"`coarse=False` groups TransferClassifier as .*stages\.1#3.*`layer_groups`"):
        module_layer_groups(model, coarse=False)
    plain = PlainModule()  # no `layer_groups`: grouped from its backbone, its other parameters as the head
    assert [g.name for g in module_layer_groups(plain)] == ["stem", "1", "3", "head"]
    with pytest.raises(AttributeError, match=r"PlainModule\.encoder.*`backbone_attr`"):
        module_layer_groups(plain, backbone_attr="encoder")


def test_the_classifier_regroups_when_its_parameters_are_replaced():
    from lit_transfer import TransferClassifier

    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    before = model.layer_groups
    model.load_state_dict(model.state_dict(), assign=True)  # new Parameter objects
    after = model.layer_groups
    assert after is not before
    assert {id(p) for g in after for p in g.params} == {id(p) for p in model.parameters()}


# ------------------------------------------------------------------------- the optimizer holds every parameter
def _frozen_backbone_model():
    model = timm.create_model("test_resnet", num_classes=3)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("fc."))
    return model


def test_parameters_missing_from_an_optimizer_built_over_trainable_ones_only():
    from lit_transfer.freezing.layer_groups import check_optimizers_hold_every_parameter, parameters_missing_from

    model = _frozen_backbone_model()
    filtered = torch.optim.SGD(filter(lambda p: p.requires_grad, model.parameters()), lr=0.1)
    missing = parameters_missing_from([filtered], model)
    assert missing == [n for n, _ in model.named_parameters() if not n.startswith("fc.")]
    with pytest.raises(
        ValueError,
        match=r"LayerFreezing needs the optimizer to hold every parameter of ResNet, frozen ones included, but"
        rf" {len(missing)} of its {len(list(model.parameters()))} parameter tensors are in no param group:"
        r" `conv1\.0\.weight`.*never be updated.*`torch\.optim\.SGD\(self\.parameters\(\), \.\.\.\)`",
    ):
        check_optimizers_hold_every_parameter([filtered], model)
    # every parameter held (frozen ones too, split over two optimizers or groups): accepted; no optimizer: accepted
    whole = torch.optim.SGD(model.parameters(), lr=0.1)
    assert parameters_missing_from([whole], model) == []
    check_optimizers_hold_every_parameter([whole], model)
    head, body = torch.optim.SGD(model.fc.parameters(), lr=0.1), torch.optim.Adam(filtered.param_groups[0]["params"])
    assert len(parameters_missing_from([head, body], model)) == len(missing)
    check_optimizers_hold_every_parameter([], model)


def test_the_check_compares_parameters_by_identity_not_value():
    from lit_transfer.freezing.layer_groups import parameters_missing_from

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # equal values everywhere
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    assert parameters_missing_from([optimizer], model) == ["0.weight", "0.bias"]
