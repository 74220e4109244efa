import http.server
import threading
import time

import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from lit_transfer.backbones import backbone_data_config, create_backbone, hub_reachable, load_weights_file
from lit_transfer.errors import UnsafeFileError, WeightsMismatchError, WeightsUnavailableError

FAMILIES = ["test_resnet", "test_vit", "test_convnext", "test_efficientnet"]


def _source(name, tmp_path, fmt="safetensors", num_classes=10):
    torch.manual_seed(1)
    model = timm.create_model(name, num_classes=num_classes)
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
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    huggingface_hub.close_session()
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError):
        create_backbone("resnet10t", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def _hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _cache_repo(cache, repo_id, files):
    """Put ``files`` (name -> source path) into the cache as snapshot ``main`` of ``repo_id``, as a download would."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


def test_hub_cache_is_used_when_present(monkeypatch, tmp_path):
    """timm's own hub path reads the cache: its stem and body tensors, the tag's head replaced by a new one."""
    cache = _hub_cache(tmp_path, monkeypatch)
    source, path = _source("test_resnet", tmp_path, num_classes=1000)  # the tag's weights have the tag's head
    _cache_repo(cache, "timm/test_resnet.r160_in1k", {"model.safetensors": path})
    model = create_backbone("test_resnet.r160_in1k", num_classes=3, pretrained=True)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    assert (
        model.get_classifier().out_features == 3 and model.pretrained_cfg["hf_hub_id"] == "timm/test_resnet.r160_in1k"
    )


@pytest.mark.parametrize("in_chans", [1, 3])
def test_hf_hub_names_load_through_timm(monkeypatch, tmp_path, in_chans):
    """``hf-hub:org/repo`` (timm's name for hub weights) builds from the repository's config.json and weights."""
    torch.manual_seed(2)
    saved = timm.create_model("test_vit", num_classes=7)
    folder = tmp_path / "repo"
    timm.models.save_for_hf(saved, str(folder), safe_serialization=True)
    cache = _hub_cache(tmp_path, monkeypatch)
    files = {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}
    _cache_repo(cache, "someone/tiny-vit", files)
    model = create_backbone("hf-hub:someone/tiny-vit", num_classes=3, pretrained=True, in_chans=in_chans)
    assert type(model).__name__ == "VisionTransformer" and model.get_classifier().out_features == 3
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], saved.state_dict()["blocks.0.attn.qkv.weight"])
    assert model.patch_embed.proj.weight.shape[1] == in_chans
    assert backbone_data_config("hf-hub:someone/tiny-vit") == backbone_data_config(saved)
    local = create_backbone(f"local-dir:{folder}", num_classes=3, pretrained=True)  # timm's folder format
    assert torch.equal(local.state_dict()["blocks.0.attn.qkv.weight"], saved.state_dict()["blocks.0.attn.qkv.weight"])


def test_hf_hub_name_not_cached_offline_fails_fast(monkeypatch, tmp_path):
    _hub_cache(tmp_path, monkeypatch)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"'hf-hub:someone/missing'.*hub id 'someone/missing'.*local"):
        create_backbone("hf-hub:someone/missing", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def test_repo_id_without_prefix_names_the_prefix():
    with pytest.raises(ValueError, match=r"someone/tiny-vit.*hf-hub:someone/tiny-vit"):
        create_backbone("someone/tiny-vit", num_classes=3)


def test_files_go_through_timm_strictly(tmp_path):
    """A plain file is timm's ``pretrained_cfg_overlay=dict(file=...)``; its head (10) is replaced after the load."""
    source, path = _source("test_convnext", tmp_path)
    model = create_backbone("test_convnext", num_classes=4, pretrained=path)
    assert model.pretrained_cfg["file"] == str(path) and model.pretrained_cfg["num_classes"] == 10
    assert "state_dict" not in model.pretrained_cfg
    assert torch.equal(
        model.state_dict()["stages.1.blocks.0.mlp.fc1.weight"], source["stages.1.blocks.0.mlp.fc1.weight"]
    )
    torch.save({"state_dict": {k: v[:1] if k == "stem.0.weight" else v for k, v in source.items()}}, tmp_path / "x.pth")
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch: stem\.0\.weight: file \(1, 3"):
        create_backbone("test_convnext", num_classes=4, pretrained=tmp_path / "x.pth")


def test_grayscale_weights_into_a_grayscale_model(tmp_path):
    """A checkpoint of an ``in_chans=1`` model loads into another one unchanged (its stem is not re-adapted)."""
    torch.manual_seed(3)
    gray = timm.create_model("test_resnet", in_chans=1, num_classes=5)
    path = tmp_path / "gray.safetensors"
    save_file({k: v.contiguous() for k, v in gray.state_dict().items()}, str(path))
    model = create_backbone("test_resnet", num_classes=2, pretrained=path, in_chans=1)
    assert torch.equal(model.state_dict()["conv1.0.weight"], gray.state_dict()["conv1.0.weight"])


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy on the loopback interface that answers every request itself and records its target."""

    seen: list[str] = []

    def do_HEAD(self):
        self.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(monkeypatch):
    """``HTTP_PROXY`` pointing at :class:`_Proxy`, the hub's endpoint a host that resolves nowhere."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Proxy.seen = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.invalid")
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    huggingface_hub.close_session()  # the next session reads the proxy settings
    yield _Proxy
    huggingface_hub.close_session()
    server.shutdown()
    server.server_close()


def test_reachability_probe_goes_through_the_proxy(proxy, monkeypatch):
    """A user behind a proxy is not told the hub is unreachable: the probe asks through huggingface_hub's session."""
    assert hub_reachable()
    assert proxy.seen and proxy.seen[0].startswith("http://hub.invalid")
    monkeypatch.setenv("NO_PROXY", "hub.invalid")  # a direct connection: blocked here, as on an offline machine
    huggingface_hub.close_session()
    start = time.monotonic()
    assert not hub_reachable()
    assert time.monotonic() - start < 5 and len(proxy.seen) == 1


def test_offline_flag_set_after_import_is_honoured(monkeypatch):
    """``HF_HUB_OFFLINE=1`` exported after huggingface_hub was imported still means: no request at all."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = []
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: requests.append(1))
    assert not hub_reachable() and not requests


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
