"""The segmenter's reading of the head-only policies: its new part is the decoder *and* the 1x1 head.

A classifier's policies start by training "the head alone": the one new layer on top of the pretrained backbone.
A segmenter's new part is two groups, the decoder and the head, both randomly initialised; training the 1x1 head
over a frozen random decoder would learn nothing useful. So, for a segmenter, the policies whose phases count
trainable groups from a head-only start are restated with the decoder counted in, as
:class:`~lit_transfer.freezing.UnfreezeAtEpochs` schedules over the segmenter's groups (the restated policy is the
one the model records, runs and saves):

* ``linear_probe`` -> ``{0: 2}``: the encoder frozen for the whole run ("frozen encoder");
* ``freeze_unfreeze`` (at epoch ``k``) -> ``{0: 2, k: -1}``: the decoder and head first, then everything (LP-FT);
* ``gradual_unfreeze`` -> the same steps, one group deeper at each (``{0: 2, start: 3, ...}``).

* ``auto`` -> the same policy object, with ``new_groups=2``: its probe trains the decoder and head, and every candidate
  depth trains them (the shallowest candidate is "decoder + head", a frozen encoder).

Explicit schedules (``unfreeze_at_epochs``), ``surgical`` (name ``decoder`` among its groups to train it) and
``full_fine_tune`` are taken as they are.
"""

from __future__ import annotations

from lit_transfer.freezing import (
    AutoFreeze,
    FreezeUnfreeze,
    FreezingPolicy,
    GradualUnfreeze,
    LinearProbe,
    UnfreezeAtEpochs,
)

__all__ = ["with_decoder"]


def with_decoder(policy: FreezingPolicy, num_groups: int) -> FreezingPolicy:
    """``policy`` restated for a model whose last two of ``num_groups`` groups (decoder, head) are both new.

    Example:
        >>> with_decoder(FreezeUnfreeze(unfreeze_at_epoch=2), num_groups=7)
        UnfreezeAtEpochs(schedule={0: 2, 2: -1}, train_bn=False)
        >>> with_decoder(GradualUnfreeze(every_n_epochs=2), num_groups=5)
        UnfreezeAtEpochs(schedule={0: 2, 2: 3, 4: 4, 6: 5}, train_bn=False)
    """
    if isinstance(policy, AutoFreeze):
        policy.new_groups = 2  # set on the caller's object, which is the one that gets the plan
        return policy
    if isinstance(policy, LinearProbe):
        schedule = {0: 2}
    elif isinstance(policy, FreezeUnfreeze):
        schedule = {0: 2, policy.unfreeze_at_epoch: -1} if policy.unfreeze_at_epoch > 0 else {0: -1}
    elif isinstance(policy, GradualUnfreeze):
        schedule = {0: 2}
        epoch, depth = policy.start_epoch, 2
        while depth < num_groups:
            depth = min(num_groups, depth + policy.groups_per_step)
            schedule[epoch] = depth
            epoch += policy.every_n_epochs
    else:
        return policy
    return UnfreezeAtEpochs(schedule, train_bn=policy.train_bn)
