"""LayerFreezing: apply a freezing policy to any LightningModule's backbone, resumable and DDP-safe.

How it stays correct across phase changes:

* **Only ``requires_grad`` and module modes change.** The optimizer holds every parameter from the start;
  a frozen parameter's ``.grad`` is cleared so no optimizer (momentum, weight decay) moves it.
* **BatchNorm is a stated policy.** BN layers in frozen groups run in eval mode with frozen affine parameters
  (``train_bn=True`` keeps them training, as fastai does). Modes are re-applied at every epoch start, because
  Lightning restores each submodule's mode after validation rather than calling ``train()``.
* **Resume is exact.** The phase lives in ``state_dict`` and is re-applied in ``on_fit_start``, after the
  checkpoint's callback state is loaded and before the optimizer state is restored; each epoch asks the policy
  for *its* phase (never ``epoch == k``), so a resume past an unfreeze does not re-freeze.
* **DDP replicas stay identical, and DDP owns every gradient exchange.** DDP all-reduces only the parameters
  that required grad when it wrapped the model. Phase 0 is frozen in ``setup``, before Lightning wraps the model,
  so frozen groups cost no backward and no communication; at every later change of the trainable set (an unfreeze,
  a re-freeze, a resume into a later phase) the module is wrapped again, so DDP's bucketed reducer averages exactly
  the parameters that train, overlapping communication with backward (before mixed precision's inf check), as in
  a plain DDP fine-tune. A policy that freezes groups again therefore needs no ``find_unused_parameters``.
* **Any trainable set.** The phase is a mask over the groups (:meth:`~lit_transfer.freezing.FreezingPolicy.
  trainable_mask`), so a policy may train groups in the middle of the network (:class:`~lit_transfer.freezing.
  SurgicalFineTune`). Checkpoints store the mask (and, for compatibility, the count of trainable groups; older
  checkpoints with the count alone still load).
* **Decided policies.** :class:`~lit_transfer.freezing.AutoFreeze` is decided once, at the start of its first
  fine-tuning epoch, by trial fine-tunes on rank 0 whose plan is broadcast to every rank
  (:mod:`lit_transfer.freezing.measure`); its learning-rate multipliers go into the optimizer and its schedulers
  then, and its plan into this callback's state, so a resume follows the plan without new trials or multiplying
  again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lit_transfer._compat import rewrap_ddp
from lit_transfer.callbacks.early_stopping_check import warn_if_early_stopping_cuts_a_phase
from lit_transfer.errors import CheckpointMismatchError
from lit_transfer.freezing import AutoFreeze, FreezingPolicy, resolve_policy
from lit_transfer.freezing.layer_groups import (
    LayerGroup,
    check_optimizers_hold_every_parameter,
    layout_fingerprint,
    module_layer_groups,
    set_trainable,
)
from lit_transfer.freezing.measure import apply_lr_multipliers, plan_auto_freeze
from lit_transfer.freezing.trial_data import check_measurable
from lit_transfer.training_state import apply_modes, frozen_modes

__all__ = ["LayerFreezing"]


class LayerFreezing(Callback):
    """Freeze and unfreeze a module's layer groups by a :class:`~lit_transfer.freezing.FreezingPolicy`.

    Works on any LightningModule with a backbone attribute. A module that has its own ``layer_groups`` (as
    :class:`~lit_transfer.TransferClassifier` does: the groups its optimizer was built from) is frozen by those;
    any other by its backbone's timm ``group_matcher`` groups (or its top-level children), with the module's
    parameters outside the backbone as a final ``head`` group, which always trains (see
    `module_layer_groups`). The optimizer must hold every parameter from the start,
    frozen ones included (the package's :class:`~lit_transfer.TransferClassifier` builds it so; a plain
    ``Adam(self.parameters())`` does too); ``fit`` refuses one that does not, before the first step.

    Args:
        policy: A policy object or name (``"linear_probe"``, ``"freeze_unfreeze"``, ``"gradual_unfreeze"``,
            ``"unfreeze_at_epochs"``, ``"full_fine_tune"``, ``"surgical"``, ``"auto"``).
        train_bn: Override the policy's ``train_bn``.
        backbone_attr: Attribute of the LightningModule that holds the backbone.
        coarse: ``None`` takes the module's own ``layer_groups`` when it has them, else timm's coarse groups (one per
            stage). ``True``/``False`` ask for coarse or fine groups (one per block); for a module with its own
            ``layer_groups`` they must give the same groups.

    Example:
        >>> from lit_transfer.freezing import FreezeUnfreeze
        >>> LayerFreezing(FreezeUnfreeze(unfreeze_at_epoch=3))
        LayerFreezing(policy=FreezeUnfreeze(unfreeze_at_epoch=3, train_bn=False))
    """

    def __init__(
        self,
        policy: FreezingPolicy | str = "freeze_unfreeze",
        train_bn: bool | None = None,
        backbone_attr: str = "backbone",
        coarse: bool | None = None,
    ) -> None:
        self.policy = resolve_policy(policy, train_bn=train_bn)
        if not isinstance(backbone_attr, str) or not backbone_attr:
            raise ValueError(f"`backbone_attr` must be an attribute name, got {backbone_attr!r}.")
        self.backbone_attr = backbone_attr
        self.coarse = coarse
        self.groups: list[LayerGroup] = []
        self.trainable_groups: int | None = None
        self.trainable_mask: list[bool] | None = None
        self._restored: dict[str, Any] | None = None
        self._ddp_registered: set[int] | None = None
        self._module: LightningModule | None = None
        self._modes: list[tuple[nn.Module, bool]] | None = None  # this phase's module modes (reset by `_apply`)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy={self.policy!r})"

    @property
    def state_key(self) -> str:  # noqa: D102
        return f"LayerFreezing[backbone_attr={self.backbone_attr}]"

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_strategy(trainer)
        self._module = pl_module
        self.groups = self._compute_groups(pl_module)
        self.policy.bind([g.name for g in self.groups], trainer.max_epochs)
        self._apply(self.policy.trainable_mask(0, len(self.groups)), pl_module, announce=False)

    def _compute_groups(self, pl_module: LightningModule) -> list[LayerGroup]:
        return module_layer_groups(pl_module, self.backbone_attr, self.coarse)

    def _check_strategy(self, trainer: Trainer) -> None:
        strategy = trainer.strategy
        supported = isinstance(strategy, (SingleDeviceStrategy, DDPStrategy))
        if not supported or isinstance(strategy, DeepSpeedStrategy):
            raise ValueError(
                f"LayerFreezing supports single-device and DDP strategies, not {type(strategy).__name__}: FSDP"
                " needs uniform `requires_grad` inside each wrapped unit and DeepSpeed owns the optimizer. Use"
                " `strategy='ddp'` (or 'ddp_spawn'), or remove LayerFreezing / use `freeze: full_fine_tune`."
            )

    # ----------------------------------------------------------------- resume
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "trainable_groups": self.trainable_groups,
            "trainable_mask": self.trainable_mask,
            "layout": [list(item) for item in layout_fingerprint(self.groups)],
            "policy": self.policy.to_config(),
            "policy_state": self.policy.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)
        if self.groups:
            self._check_layout(state_dict)

    def _check_layout(self, state: dict[str, Any]) -> None:
        saved = [tuple(item) for item in state.get("layout", [])]
        current = layout_fingerprint(self.groups)
        if saved and saved != current:
            raise CheckpointMismatchError(
                "The checkpoint was written for other layer groups than this model has:"
                f" saved {saved}, current {current}. Resume with the same `backbone` (and grouping) the"
                " checkpoint was trained with, or load only its weights (`pretrained: <ckpt>`) to start a new run."
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        check_optimizers_hold_every_parameter(trainer.optimizers, pl_module)
        # Lightning has just wrapped the module: DDP registered the parameters trainable now (phase 0).
        self._ddp_registered = _trainable_ids(pl_module) if isinstance(trainer.strategy, DDPStrategy) else None
        if self._restored is not None:
            self._check_layout(self._restored)
            self.policy.load_state_dict(self._restored.get("policy_state") or {})
            mask = self._restored.get("trainable_mask")
            if mask is not None:
                self._apply([bool(flag) for flag in mask], pl_module, announce=False)
            self._restored = None
        self._follow_in_ddp(trainer, pl_module)
        self._warn_if_random_backbone(trainer, pl_module)
        warn_if_early_stopping_cuts_a_phase(trainer, self.policy, len(self.groups))

    def _warn_if_random_backbone(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """One loud line when the policy freezes layers of a backbone without pretrained weights.

        The module says so with ``hparams["pretrained"]`` (``False``: random init, as in
        :class:`~lit_transfer.TransferClassifier`); a resumed fit (``ckpt_path``) has the checkpoint's weights, and so
        has a module that says ``weights_from_checkpoint`` (one built by ``load_from_checkpoint``).
        """
        hparams = getattr(pl_module, "hparams", {})
        if trainer.ckpt_path is not None or getattr(pl_module, "weights_from_checkpoint", False):
            return
        if "pretrained" not in hparams or hparams["pretrained"] not in (False, None):
            return
        frozen = [g.name for g, trains in zip(self.groups, self.trainable_mask or []) if not trains]
        if not frozen:
            return
        rank_zero_warn(
            f"`freeze: {self.policy.name}` freezes {len(frozen)} of the {len(self.groups)} layer groups of a"
            " backbone with random weights (`pretrained: false`): frozen random features learn nothing. Fine-tune"
            " pretrained weights (`--model.pretrained true`, or offline `--model.pretrained"
            " path/to/weights.safetensors`), or train from scratch with `--model.freeze full_fine_tune`."
        )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if isinstance(self.policy, AutoFreeze) and self.policy.plan is None:
            check_measurable(trainer)  # before the first step, not at the decision

    # ----------------------------------------------------------------- phases
    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        policy = self.policy
        if isinstance(policy, AutoFreeze) and policy.awaits_plan(trainer.current_epoch):
            plan = plan_auto_freeze(trainer, pl_module, self.groups, policy)
            apply_lr_multipliers(trainer, self.groups, plan.lr_mults)
        mask = policy.trainable_mask(trainer.current_epoch, len(self.groups))
        if mask != self.trainable_mask:
            self._apply(mask, pl_module, announce=True)
            self._follow_in_ddp(trainer, pl_module)
        self._set_modes(pl_module)
        trainable = float(self.trainable_groups or 0)
        pl_module.log("trainable_groups", trainable, on_step=False, on_epoch=True, sync_dist=True)

    def _apply(self, trainable: int | Sequence[bool], pl_module: LightningModule, announce: bool) -> None:
        """Set ``requires_grad`` by a mask over the groups (or a count of groups from the head)."""
        n = len(self.groups)
        if isinstance(trainable, int):
            count = max(1, min(trainable, n))
            mask = [index >= n - count for index in range(n)]
        else:
            mask = list(trainable)
            if len(mask) != n:
                raise ValueError(f"A trainable mask needs one entry per layer group ({n}), got {len(mask)}.")
        set_trainable(pl_module, self.groups, mask, self.policy.train_bn)
        self.trainable_mask = mask
        self._modes = None
        self.trainable_groups = sum(mask)
        if announce:
            chosen = [g for g, flag in zip(self.groups, mask) if flag]
            trainable_params = sum(g.numel for g in chosen)
            names = [g.name for g in chosen]
            rank_zero_info(f"LayerFreezing: {len(chosen)}/{n} groups train ({trainable_params:,} params): {names}")

    def _frozen_ids(self) -> set[int]:
        mask = self.trainable_mask or [True] * len(self.groups)
        return {id(p) for g, flag in zip(self.groups, mask) if not flag for p in g.params}

    def _set_modes(self, pl_module: LightningModule) -> None:
        """Eval mode for frozen sub-trees (BN, dropout, drop-path inside them); train mode elsewhere.

        Called at every epoch start: Lightning restores each submodule's own mode after validation, so a mode set
        once would outlive the phase it belongs to. The modes are worked out once per phase (walking the module
        tree) and set again from that list.
        """
        if not pl_module.training:
            return
        if self._modes is None:
            self._modes = frozen_modes(pl_module, self._frozen_ids(), self.policy.train_bn)
        apply_modes(self._modes)

    # -------------------------------------------------------------------- DDP
    def _follow_in_ddp(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wrap the module in DDP again when the trainable set differs from the one DDP registered.

        Called on every rank at the same point (fit start, a phase change at an epoch start), between optimizer
        steps. The new wrapper broadcasts rank 0's parameters and buffers (already equal on every rank) and builds
        its gradient buckets for exactly the parameters that train from now on.
        """
        if self._ddp_registered is None:
            return
        trainable = _trainable_ids(pl_module)
        if trainable != self._ddp_registered and rewrap_ddp(trainer.strategy):
            self._ddp_registered = trainable


def _trainable_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters() if p.requires_grad}
