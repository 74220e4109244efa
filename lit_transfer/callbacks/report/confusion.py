"""The test confusion matrix of :class:`~lit_transfer.callbacks.RunReport`.

A torchmetrics ``MulticlassConfusionMatrix`` fed with the logits the module computed itself; torchmetrics sums the
counts over the processes of a DDP run.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_transfer.errors import is_int
from lit_transfer.tasks import thresholds_of

__all__ = ["TestConfusion", "class_names_for", "split_batch"]

_LABEL_KEYS = ("label", "labels", "target", "targets", "y")
_LOGIT_KEYS = ("logits", "preds", "probs")


def split_batch(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """Inputs and labels of a batch.

    A batch is an ``(x, y, ...)`` sequence, or a dict with ``image`` (or ``x``) and a ``label``/``labels``/``target``/
    ``targets``/``y`` key; the labels are ``None`` when absent or not a tensor.

    Example:
        >>> x, y = split_batch({"image": torch.zeros(2, 3), "target": torch.tensor([0, 1])})
        >>> tuple(x.shape), y.tolist(), split_batch(torch.zeros(2))[1]
        ((2, 3), [0, 1], None)
    """
    if isinstance(batch, Mapping):
        x = batch.get("image", batch.get("x"))
        labels = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
    elif isinstance(batch, (list, tuple)) and batch:
        x, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        x, labels = batch, None
    return x, labels if isinstance(labels, torch.Tensor) else None


def class_names_for(size: int, candidates: Sequence[Any]) -> list[str]:
    """The first of ``candidates`` that is a sequence of ``size`` names (as strings), else ``"0"`` ... ``size-1``.

    Example:
        >>> class_names_for(2, [None, ["a", "b", "c"], ("cat", "dog")]), class_names_for(2, [])
        (['cat', 'dog'], ['0', '1'])
    """
    for names in candidates:
        if isinstance(names, Sequence) and not isinstance(names, str) and len(names) == size:
            return [str(n) for n in names]
    return [str(i) for i in range(size)]


def _declared_class_count(pl_module: LightningModule, trainer: Trainer | None) -> int | None:
    """The class count a module or its DataModule states (``num_classes`` attribute or hyper-parameter)."""
    hparams = getattr(pl_module, "hparams", {})
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for count in (
        getattr(pl_module, "num_classes", None),
        hparams.get("num_classes"),
        getattr(datamodule, "num_classes", None),
    ):
        if is_int(count) and count > 0:
            return count
    return None


class TestConfusion:
    """Counts of (true class, predicted class) over one ``test`` run.

    The predictions are the logits the module already computes: the ``test_step`` output (a tensor, or a dict with
    ``logits``/``preds``/``probs``), else the output of the module's own forward call during the step (captured by a
    forward hook), else, for a module that does neither, one more forward call on the batch's inputs. Class-index
    predictions (1-D integer tensors) are accepted when the module or its DataModule states ``num_classes``. A
    binary model's single logit counts as class 1 when its sigmoid reaches the model's threshold (``thresholds``).
    """

    def __init__(self) -> None:
        self.metric: MulticlassConfusionMatrix | None = None
        self._captured: torch.Tensor | None = None
        self._hook: Any = None
        self._warned: set[str] = set()

    def start(self, pl_module: LightningModule) -> None:
        """Begin a test run: clear the counts and capture the module's forward outputs."""
        self.stop()
        self.metric, self._captured, self._warned = None, None, set()
        self._hook = pl_module.register_forward_hook(self._capture)

    def stop(self) -> None:
        """Stop capturing forward outputs."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._captured = output.detach()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(f"RunReport: {message}")

    def update(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any) -> None:
        """Count the predictions of one test batch against its labels."""
        captured, self._captured = self._captured, None
        x, labels = split_batch(batch)
        if labels is None or labels.ndim != 1:
            self._warn_once("labels", "test batches carry no class-index labels; no confusion matrix is drawn.")
            return
        predictions = _logits(outputs, captured, len(labels))
        if predictions is None:
            with torch.no_grad():
                predictions = pl_module(x)
            self._captured = None  # the hook saw this extra call
        if predictions.ndim == 2 and predictions.shape[-1] == 1:  # a binary model's one logit: P(class 1)
            predictions = (predictions[:, 0].float().sigmoid() >= _binary_threshold(pl_module)).long()
            num_classes: int | None = 2
        elif predictions.ndim == 2:
            num_classes = int(predictions.shape[-1])
        else:
            num_classes = self.metric.num_classes if self.metric is not None else None
            num_classes = num_classes or _declared_class_count(pl_module, trainer)
        if num_classes is None:
            self._warn_once("classes", "the test step gives class indices but the module states no `num_classes`.")
            return
        labels = labels.to(predictions.device).long()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            self._warn_once("range", f"test labels outside 0..{num_classes - 1} are left out of the confusion matrix.")
            keep = (labels >= 0) & (labels < num_classes)
            labels, predictions = labels[keep], predictions[keep]
        if self.metric is None:
            self.metric = MulticlassConfusionMatrix(num_classes).to(predictions.device)
        self.metric.update(predictions if predictions.ndim == 2 else predictions.long(), labels)

    def compute(self, trainer: Trainer, device: torch.device) -> torch.Tensor | None:
        """The counts (a ``(classes, classes)`` int64 tensor on the CPU; rows true, columns predicted), or ``None``.

        Every process must call it under DDP: torchmetrics sums the processes' counts. The class count is agreed
        first, so a process that saw no labelled batch still takes part.
        """
        if trainer.world_size > 1:
            local = self.metric.num_classes if self.metric is not None else 0
            size = int(trainer.strategy.all_gather(torch.tensor(local, device=device)).max())
            if size == 0:
                return None
            if self.metric is None:
                self.metric = MulticlassConfusionMatrix(size).to(device)
        if self.metric is None:
            return None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            return self.metric.compute().long().cpu()


def _binary_threshold(pl_module: LightningModule) -> float:
    """The decision threshold of a binary model (its first ``thresholds`` entry), else 0.5."""
    thresholds = thresholds_of(pl_module)
    return float(thresholds[0]) if thresholds else 0.5


def _logits(outputs: Any, captured: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The ``test_step`` output or else the captured forward output, if logits (or class indices) of ``n`` samples."""
    if isinstance(outputs, Mapping):
        outputs = next((outputs[k] for k in _LOGIT_KEYS if k in outputs), None)
    for candidate in (outputs, captured):
        if not isinstance(candidate, torch.Tensor) or candidate.ndim not in (1, 2) or len(candidate) != n:
            continue
        if candidate.ndim == 2 or not candidate.is_floating_point():
            return candidate.detach()
    return None
