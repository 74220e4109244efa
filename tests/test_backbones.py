import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from lit_transfer.backbones import backbone_data_config, create_backbone, load_weights_file
from lit_transfer.errors import UnsafeFileError, WeightsMismatchError, WeightsUnavailableError

FAMILIES = ["test_resnet", "test_vit", "test_convnext", "test_efficientnet"]


def _source(name, tmp_path, fmt="safetensors"):
    torch.manual_seed(1)
    model = timm.create_model(name, num_classes=10)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return state, path


def _head_keys(model):
    prefixes = tuple(f"{c}." for c in ([model.pretrained_cfg["classifier"]]))
    return {k for k in model.state_dict() if k.startswith(prefixes)}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("in_chans", [1, 3, 4])
def test_local_weights_load_every_non_head_tensor(tmp_path, name, in_chans):
    source, path = _source(name, tmp_path)
    model = create_backbone(name, num_classes=3, pretrained=path, in_chans=in_chans)
    first_conv = model.pretrained_cfg["first_conv"] + ".weight"
    head = _head_keys(model)
    for key, value in model.state_dict().items():
        if key in head or key == first_conv or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, source[key]), key
    assert model.state_dict()[first_conv].shape[1] == in_chans
    if in_chans == 3:
        assert torch.equal(model.state_dict()[first_conv], source[first_conv])
    assert model.get_classifier().out_features == 3


def test_pth_and_lightning_checkpoint_prefixes(tmp_path):
    source, path = _source("test_resnet", tmp_path, fmt="pth")
    model = create_backbone("test_resnet", num_classes=10, pretrained=path)
    assert torch.equal(model.state_dict()["fc.weight"], source["fc.weight"])  # same head shape: kept
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.items()}, "epoch": 3}, ckpt)
    model = create_backbone("test_resnet", num_classes=4, pretrained=ckpt)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])


def test_file_missing_a_backbone_tensor_is_refused(tmp_path):
    source, _ = _source("test_resnet", tmp_path)
    del source["layer2.0.conv1.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(source, str(path))
    with pytest.raises(WeightsMismatchError, match=r"missing: layer2\.0\.conv1\.weight"):
        create_backbone("test_resnet", num_classes=3, pretrained=path)


def test_weights_of_another_architecture_list_the_keys(tmp_path):
    _, path = _source("test_convnext", tmp_path)
    with pytest.raises(WeightsMismatchError, match=r"do not fit the backbone \(ResNet\).*missing: conv1"):
        create_backbone("test_resnet", num_classes=3, pretrained=path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*pretrained"):
        create_backbone("test_resnet", num_classes=3, pretrained=tmp_path / "nope.safetensors")


def test_unknown_backbone_suggests_names():
    with pytest.raises(ValueError, match=r"Unknown timm backbone 'resnt18'.*'resnet18'"):
        create_backbone("resnt18", num_classes=3)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(UnsafeFileError, match=r"evil\.pth.*safetensors"):
        load_weights_file(path)
    assert "this must never run" not in capsys.readouterr().out


def test_offline_hub_weights_fail_fast_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"resnet10t.*timm/resnet10t.*pretrained"):
        create_backbone("resnet10t", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def test_unreachable_hub_without_offline_flag_still_fails_fast(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset: the 3 s probe (blocked socket here) decides, not timm's retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError):
        create_backbone("resnet10t", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def test_hub_cache_is_used_when_present(monkeypatch, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--timm--test_resnet.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--timm--test_resnet.r160_in1k" / "refs").mkdir()
    (cache / "models--timm--test_resnet.r160_in1k" / "refs" / "main").write_text("0" * 40)
    source, path = _source("test_resnet", tmp_path)
    (snapshot / "model.safetensors").write_bytes(path.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = create_backbone("test_resnet.r160_in1k", num_classes=3, pretrained=True)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])


@pytest.mark.parametrize(
    ("name", "mean", "crop_pct"),
    [("resnet18", [0.485, 0.456, 0.406], 0.95), ("vit_base_patch16_224.augreg_in21k_ft_in1k", [0.5] * 3, 0.9)],
)
def test_data_config_comes_from_timm(name, mean, crop_pct):
    config = backbone_data_config(name)
    assert config["mean"] == pytest.approx(mean)
    assert config["crop_pct"] == crop_pct
    timm_cfg = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    assert config["input_size"] == list(timm_cfg["input_size"])
    assert config["interpolation"] == timm_cfg["interpolation"]
