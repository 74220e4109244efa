"""Export a fine-tuned model for deployment: ONNX and TorchScript, from a checkpoint or a model.

The exported graph takes a float32 batch ``(N, C, H, W)`` that is already resized and normalised the way the model
was trained (``model.data_config``: the DataModule's size, mean and std recorded at ``fit`` and kept in the
checkpoint; the backbone's timm data config for a model or checkpoint without one; stored in the exported file's
metadata). What it returns follows the model's task (``task`` in the metadata):

* multiclass: **logits** ``(N, num_classes)`` by default, or class probabilities (softmax) with ``softmax=True``;
* binary and multi-label: logits ``(N, 1)`` / ``(N, L)``, or probabilities (sigmoid) with ``softmax=True``; the
  decision thresholds the model uses are in the metadata (``thresholds``);
* regression: **values** ``(N, K)`` in the targets' original units: the standardisation the model was trained with
  is undone inside the graph (the statistics are in the metadata as ``target_stats``, for reference only);
* segmentation: per-pixel **logits** ``(N, num_classes, H, W)`` at the input size, or probabilities (softmax over
  the classes) with ``softmax=True``; the inputs are letterboxed (``preprocessing`` in the metadata), so a
  prediction's image part is its top-left ``letterbox_shape`` (:mod:`lit_transfer.data.segmentation_transforms`).

The batch dimension is dynamic; height and width are fixed to ``image_size`` (default: the ``input_size`` of that
data config). A timm ViT built with ``dynamic_img_size`` resamples its position embeddings at every forward pass with
an antialiased bicubic resize that ONNX lacks; since the graph has one size anyway, :func:`export_onnx` exports a
copy whose embeddings are resampled once for that size (timm's ``set_input_size``, the same resize), after checking
that the copy gives the model's outputs. Other families built with ``dynamic_img_size`` are exported as they are
(Swin's windows are; EVA's rotary embeddings are not, and the error then says to use TorchScript). A size the model
does not take (a strict ViT's other size, a multiple of no patch size) is refused before any export, naming
``image_size``.

Both functions check the exported model against PyTorch on a random batch before writing it (``check=True``), so a
file that computes something else is never written silently. The file is serialised in memory and written
atomically (:mod:`lit_transfer.files.atomic`): under its final name there is the complete file or the previous one,
never a cut-short one, and a full disk is a :class:`~lit_transfer.errors.FileWriteError` naming the file.

Example:
    >>> import tempfile, pathlib
    >>> from lit_transfer import TransferClassifier
    >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> export_torchscript(model, out / "model.pt").name
    'model.pt'
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_transfer.files.atomic import atomic_write_bytes
from lit_transfer.files.checks import load_torch_file
from lit_transfer.models.input_size import fixed_input_size
from lit_transfer.tasks import target_names_of, target_stats_of, task_of, task_of_hparams, thresholds_of

__all__ = ["export_onnx", "export_torchscript", "load_for_export"]


class _Exported(nn.Module):
    """The network alone, in eval mode, with what the task puts on top of its raw outputs.

    Classifiers: logits, or probabilities with ``probabilities`` (softmax for multiclass, sigmoid for binary and
    multi-label). Regression: values in the targets' original units (the standardisation undone) always.
    """

    def __init__(
        self, net: nn.Module, task: str, probabilities: bool, target_stats: dict[str, list[float]] | None
    ) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.probabilities = probabilities
        self.unstandardize = task == "regression" and target_stats is not None
        stats = target_stats or {"mean": [0.0], "std": [1.0]}
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.task == "regression":
            return out * self.std + self.mean if self.unstandardize else out
        if not self.probabilities:
            return out
        if self.task in ("binary", "multilabel"):
            return out.sigmoid()
        return out.softmax(dim=1 if self.task == "segmentation" else -1)


def _model_class(hparams: dict[str, Any]) -> type[nn.Module]:
    """The lit_transfer model class a checkpoint's hyper-parameters belong to (never a class from elsewhere)."""
    from lit_transfer.models import TransferClassifier, TransferRegressor, TransferSegmenter

    task = task_of_hparams(hparams)
    return {"regression": TransferRegressor, "segmentation": TransferSegmenter}.get(task, TransferClassifier)


def load_for_export(checkpoint_or_model: str | Path | nn.Module) -> nn.Module:
    """The model to export: a lit_transfer model loaded from a checkpoint, or the module given.

    Args:
        checkpoint_or_model: A Lightning ``.ckpt`` written by ``fit`` (a :class:`~lit_transfer.TransferClassifier`
            or :class:`~lit_transfer.TransferRegressor`; loaded with ``weights_only=True``, no pretrained download),
            or a module.

    Returns:
        The module on CPU in eval mode.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        CorruptFileError: The checkpoint is empty, cut short or not a PyTorch file.
        UnsafeFileError: It holds pickled objects a safe load refuses.
    """
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
    else:
        path = Path(checkpoint_or_model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Checkpoint {str(path)!r} does not exist. Pass the `.ckpt` written by `fit` (e.g. the best checkpoint"
                " the run summary names) or a model object."
            )
        hint = "Export another checkpoint of the run (e.g. the best checkpoint the run summary names)."
        checkpoint = load_torch_file(path, hint=hint, mmap=True)
        hparams = (checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None) or {}
        model = _model_class(hparams).load_from_checkpoint(path, map_location="cpu")  # type: ignore[attr-defined]
    return model.cpu().float().eval()


def _network(model: nn.Module) -> nn.Module:
    """The plain network behind a lit_transfer model: its timm backbone (whose forward gives the raw outputs).

    ``forward`` of a lit_transfer model is the backbone plus optional ``torch.compile`` and channels-last, neither of
    which belongs in an exported graph.
    """
    from lit_transfer.models.base import TransferModule

    return model.backbone if isinstance(model, TransferModule) else model


def _output(task: str, probabilities: bool) -> tuple[str, str]:
    """The graph output's name and its description in the metadata."""
    if task == "regression":
        return "values", "values"
    return ("probs", "probabilities") if probabilities else ("logits", "logits")


def _metadata(model: nn.Module, task: str, probabilities: bool, shape: tuple[int, int, int]) -> dict[str, str]:
    """Plain-text facts a deployment needs: preprocessing (its ``input_size`` is the graph's), task, names, output."""
    meta: dict[str, str] = {"output": _output(task, probabilities)[1], "task": task}
    data_config = getattr(model, "data_config", None)
    if data_config is None and hasattr(_network(model), "pretrained_cfg"):
        from lit_transfer.backbones import backbone_data_config

        data_config = backbone_data_config(_network(model))
    if isinstance(data_config, dict):
        meta["data_config"] = json.dumps({**data_config, "input_size": list(shape)})
    if task == "regression":
        meta["target_names"] = json.dumps(target_names_of(model))
        stats = target_stats_of(model)
        if stats is not None:
            meta["target_stats"] = json.dumps(stats)
        return meta
    names = getattr(model, "class_names", None)
    if isinstance(names, (list, tuple)):
        meta["class_names"] = json.dumps([str(n) for n in names])
    thresholds = thresholds_of(model) if task in ("binary", "multilabel") else None
    if thresholds is not None:
        meta["thresholds"] = json.dumps(thresholds)
    if task == "segmentation":
        meta["preprocessing"] = (
            "letterbox: resize the longer side to the input size (aspect ratio kept), pad the bottom and right with"
            " the mean colour; crop the prediction to the image's part and resize it to the image's size (nearest)"
        )
    return meta


def _input_shape(model: nn.Module, image_size: int | tuple[int, int] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the exported input: ``image_size`` if given, else the model's ``data_config['input_size']``."""
    data_config = getattr(model, "data_config", None)
    hparams = getattr(model, "hparams", {})
    if isinstance(data_config, dict) and "input_size" in data_config:
        channels, height, width = (int(v) for v in data_config["input_size"])
    elif hasattr(_network(model), "pretrained_cfg"):
        from lit_transfer.backbones import backbone_data_config

        channels, height, width = backbone_data_config(_network(model))["input_size"]
    else:
        channels, height, width = int(hparams.get("in_chans", 3)), 0, 0
    channels = int(hparams.get("in_chans", channels))
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height <= 0 or width <= 0:
        raise ValueError(
            f"`image_size` is needed for a {type(model).__name__} without a timm data config, got {image_size!r};"
            " pass e.g. `image_size=224` or `(224, 224)`."
        )
    return channels, int(height), int(width)


def _prepare(
    checkpoint_or_model: str | Path | nn.Module, image_size: int | tuple[int, int] | None, softmax: bool
) -> tuple[_Exported, torch.Tensor, dict[str, str]]:
    model = load_for_export(checkpoint_or_model)
    shape = _input_shape(model, image_size)
    task = task_of(model)
    wrapped = _Exported(_network(model), task, softmax, target_stats_of(model)).eval()
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    _check_input_size(wrapped, example, image_size)
    return wrapped, example, _metadata(model, task, softmax, shape)


def _check_input_size(wrapped: _Exported, example: torch.Tensor, image_size: int | tuple[int, int] | None) -> None:
    """Refuse, naming ``image_size``, a size the network does not take (a strict ViT's, a patch size's multiple).

    timm says so with an assertion deep in the forward pass; the exporters would fail on it with a trace of their own.
    """
    try:
        with torch.no_grad():
            wrapped(example)
    except (AssertionError, RuntimeError) as err:
        height, width = example.shape[-2:]
        chosen = "`image_size`" if image_size is not None else "the size it was trained at (`image_size` unset)"
        fixed = fixed_input_size(wrapped.net)
        only = f" It takes {fixed[0]} x {fixed[1]} only." if fixed is not None else ""
        raise ValueError(
            f"The model does not take {height} x {width} inputs, {chosen} ({err}).{only} Export at a size it takes:"
            " the size it was trained at, and for a ViT a multiple of its patch size (any such size only if it was"
            " fine-tuned with `dynamic_img_size: true`)."
        ) from err


def _at_one_size(network: _Exported, height: int, width: int) -> _Exported:
    """``network``, or a copy of it whose timm ViTs built with ``dynamic_img_size`` take only ``height`` x ``width``.

    The copy's position embeddings are resampled once, by timm's ``set_input_size`` (the resize a dynamic forward
    pass runs at that size), and its ViTs take the plain path (patch tokens flattened before the embeddings).
    """
    from timm.layers import Format
    from timm.models.vision_transformer import VisionTransformer

    if not any(isinstance(m, VisionTransformer) and m.dynamic_img_size for m in network.modules()):
        return network
    fixed = copy.deepcopy(network)
    for module in fixed.modules():
        if isinstance(module, VisionTransformer) and module.dynamic_img_size:
            module.set_input_size(img_size=(height, width))
            module.dynamic_img_size = False  # type: ignore[misc]  # Final in timm, for TorchScript
            module.patch_embed.flatten = True
            module.patch_embed.output_fmt = Format.NCHW
    return fixed


def _check(expected: torch.Tensor, actual: Any, what: str, path: Path, atol: float) -> None:
    actual = torch.as_tensor(actual)
    if actual.shape != expected.shape or not torch.allclose(actual, expected, atol=atol, rtol=1e-3):
        diff = (actual - expected).abs().max().item() if actual.shape == expected.shape else "shape"
        raise RuntimeError(
            f"The {what} model for {str(path)!r} does not reproduce PyTorch's output (max |diff| {diff}), so it was"
            " not written; the model probably has data-dependent control flow. Pass `check=False` to write it anyway."
        )


def export_onnx(
    checkpoint_or_model: str | Path | nn.Module,
    path: str | Path,
    image_size: int | tuple[int, int] | None = None,
    opset: int = 17,
    softmax: bool = False,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write the model as an ONNX graph with a dynamic batch axis.

    Input ``input`` is ``(batch, C, H, W)`` float32, preprocessed as the model was trained (its ``data_config``);
    output ``logits`` (or ``probs`` with ``softmax=True``) is ``(batch, outputs)``, and ``values`` for a regression
    model (see the module docstring). The file's metadata holds ``task``, ``output``, ``data_config`` (input size,
    which is always the graph's, mean, std, interpolation, crop fraction and mode) and as JSON ``class_names`` and
    ``thresholds`` (binary, multi-label) or ``target_names`` and ``target_stats`` (regression).

    Args:
        checkpoint_or_model: A ``.ckpt`` from ``fit`` or a module (a ``TransferClassifier`` or any ``nn.Module``).
        path: The ``.onnx`` file to write (parent folders are created).
        image_size: Height and width (an int for square); default: the ``input_size`` the model was trained with
            (recorded at ``fit``), or the backbone's for a model without a record.
        opset: ONNX opset version.
        softmax: Return probabilities instead of logits (a softmax; a sigmoid for binary and multi-label models).
            No effect on a regression model.
        check: Run the file with onnxruntime (when installed) and compare with PyTorch.
        atol: Absolute tolerance of that check.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: The model does not take ``image_size`` inputs (a ViT made for another size or patch multiple).
        RuntimeError: The exported graph's output differs from PyTorch's, or a backbone other than timm's
            ``VisionTransformer`` family built with ``dynamic_img_size`` does not export (nothing is written).
        FileWriteError: No space or no permission to write ``path`` (a previous file there is kept).

    Example:
        >>> import tempfile, pathlib
        >>> from lit_transfer import TransferClassifier
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
        >>> export_onnx(model, pathlib.Path(tempfile.mkdtemp()) / "model.onnx", image_size=64).suffix
        '.onnx'
    """
    path = Path(path)
    dynamic, example, meta = _prepare(checkpoint_or_model, image_size, softmax)
    wrapped = _at_one_size(dynamic, *example.shape[-2:])
    if check and wrapped is not dynamic:
        with torch.no_grad():
            _check(dynamic(example), wrapped(example), "fixed-size PyTorch", path, atol)
    output_name = _output(wrapped.task, softmax)[0]
    buffer = io.BytesIO()
    _require_onnx(check)
    with _known_exporter_warnings(check), _dynamic_size_failures(wrapped):
        torch.onnx.export(
            wrapped,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter takes a file object
            input_names=["input"],
            output_names=[output_name],
            dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,  # the torch.export-based exporter needs onnxscript; this one needs nothing extra
        )
    data = _add_onnx_metadata(buffer.getvalue(), meta)
    if check:
        with _dynamic_size_failures(wrapped):
            _check_onnx(data, wrapped, example, path, atol)
    return atomic_write_bytes(path, data)


@contextlib.contextmanager
def _dynamic_size_failures(network: nn.Module) -> Iterator[None]:
    """Say what to do when a backbone that still resizes its embeddings per input fails to export or to run.

    Only timm's ``VisionTransformer`` family is fixed to one size for ONNX (:func:`_at_one_size`); others built with
    ``dynamic_img_size`` (Swin exports as it is; EVA's rotary embeddings do not) keep their dynamic path.
    """
    try:
        yield
    except Exception as err:
        dynamic = sorted({type(m).__name__ for m in network.modules() if getattr(m, "dynamic_img_size", False) is True})
        if not dynamic:
            raise
        raise RuntimeError(
            f"ONNX export of the {', '.join(dynamic)} backbone built with `dynamic_img_size` failed"
            f" ({type(err).__name__}: {str(err)[:300]}). Only timm's VisionTransformer family is converted to one"
            " input size for ONNX; export this model with `export_torchscript` (which keeps the per-size resize), or"
            " fine-tune it without `dynamic_img_size`. Nothing was written."
        ) from err


def _require_onnx(check: bool) -> None:
    """Refuse early, naming the install, when the packages ONNX export (and its check) need are missing."""
    needed = ["onnx", "onnxruntime"] if check else ["onnx"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        skip = " (or pass `check=False` to skip the onnxruntime comparison)" if missing == ["onnxruntime"] else ""
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: `pip install 'lit-transfer[export]'`{skip}.")


@contextlib.contextmanager
def _known_exporter_warnings(check: bool) -> Iterator[None]:
    """Silence the exporters' announcements of their own deprecation, and tracer warnings when a check follows.

    Tracer warnings ("converting a tensor to a Python boolean ...") flag control flow a trace may have frozen; with
    ``check`` the exported graph is run on another batch size and compared with PyTorch, which catches what they
    warn about. Every other warning is shown.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r"The feature will be removed\. Please remove usage of this function")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|save|load)` is deprecated")
        if check:
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _check_onnx(data: bytes, wrapped: _Exported, example: torch.Tensor, path: Path, atol: float) -> None:
    """Run the serialised graph with onnxruntime on another batch size and compare with PyTorch."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    batch = torch.cat([example, example[:1]])  # another batch size than the traced one: the axis is dynamic
    with torch.no_grad():
        expected = wrapped(batch)
    (actual,) = session.run(None, {"input": batch.numpy()})
    _check(expected, actual, "ONNX", path, atol)


def _add_onnx_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    """The serialised graph with ``meta`` in its ``metadata_props`` (unchanged without the ``onnx`` package)."""
    try:
        import onnx
    except ImportError:  # metadata is a convenience; the graph is complete without it
        return data
    graph = onnx.load_model_from_string(data)
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(graph.SerializeToString())


def export_torchscript(
    checkpoint_or_model: str | Path | nn.Module,
    path: str | Path,
    image_size: int | tuple[int, int] | None = None,
    softmax: bool = False,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write the model as a traced TorchScript module (``torch.jit.load`` runs it without lit_transfer or timm).

    TorchScript is deprecated in recent PyTorch releases (``torch.jit.load`` warns); prefer :func:`export_onnx` for
    new deployments and use this for runtimes that still load TorchScript (LibTorch, older serving stacks).

    The module takes ``(batch, C, H, W)`` float32, preprocessed as the model was trained, and returns logits
    (or probabilities with ``softmax=True``; values for a regression model). The metadata of :func:`export_onnx` is
    stored as extra files (``torch.jit.load(path, _extra_files={"class_names": ""})`` reads them back).

    Args:
        checkpoint_or_model: A ``.ckpt`` from ``fit`` or a module.
        path: The file to write (``.pt`` by convention).
        image_size: Height and width of the example input used for tracing; default: the trained input size.
        softmax: Return probabilities instead of logits (a sigmoid for binary and multi-label models).
        check: Reload the file and compare its output with PyTorch's on another batch size.
        atol: Absolute tolerance of that check.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: The model does not take ``image_size`` inputs (a ViT made for another size or patch multiple).
        RuntimeError: The traced module's output differs from PyTorch's (nothing is written).
        FileWriteError: No space or no permission to write ``path`` (a previous file there is kept).
    """
    path = Path(path)
    wrapped, example, meta = _prepare(checkpoint_or_model, image_size, softmax)
    buffer = io.BytesIO()
    with _known_exporter_warnings(check), torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
        torch.jit.save(traced, buffer, _extra_files=meta)  # in memory: a full disk never reaches torch's C++ writer
        if check:
            batch = torch.cat([example, example[:1]])
            expected = wrapped(batch)
            actual = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")(batch)
            _check(expected, actual, "TorchScript", path, atol)
    return atomic_write_bytes(path, buffer.getbuffer())
