"""The tasks of the second held-out suite (``heldout_b``): shifts and backbones that neither earlier suite uses.

Built like the first held-out suite's tasks (:mod:`benchmarks.heldout_tasks`: a source model trained here from the
digits by the quick start's source recipe, then a few-shot target task), after that suite had been run and seen, so
that a rule changed since can still be checked on tasks nobody has looked at:

- **input-level shifts** (the source model is trained on all ten clean digits; the target is the same ten digits
  with a fixed corruption of every scan, :class:`~benchmarks.heldout_tasks.CorruptedDigits`): mirrored left-right,
  and thicker strokes (a grey-level dilation);
- **output-level shifts** (new labels on clean scans): digits 3-9 -> 0-2, and digits 0, 1, 5, 6, 8 -> 2, 3, 4, 7, 9;
- **three backbone families**: a ResNet (``resnet18``), a MobileNet (``mobilenetv4_conv_small``) and a ViT (timm's
  ``test_vit``, 6 blocks of width 64, at 64 px: 16 patches of 16 px), none of them used by the development suite
  (``resnet10t``) or the first held-out suite (``resnet14t``, ``mobilenetv3_small_100``, ``convnext_atto``).
"""

from __future__ import annotations

from benchmarks.heldout_tasks import HeldoutTask

ALL = tuple(range(10))
SPLIT_SOURCE, SPLIT_TARGET = (0, 1, 5, 6, 8), (2, 3, 4, 7, 9)
RESNET, MOBILENET, VIT = "resnet18", "mobilenetv4_conv_small", "test_vit"
VIT_SIZE = 64
"""Input size (px) of the ViT's tasks: 16 patches of timm's 16 px (at the suite's usual 32 px it would see 4)."""
TASKS = (
    HeldoutTask("mirror", f"{RESNET}, input: 0-9 -> 0-9 mirrored left-right", ALL, ALL, False, RESNET, "mirror"),
    HeldoutTask("split3", f"{RESNET}, output: digits 3-9 -> 0-2", tuple(range(3, 10)), (0, 1, 2), False, RESNET),
    HeldoutTask(
        "dilate",
        f"{VIT} at {VIT_SIZE} px, input: 0-9 -> 0-9 thicker strokes",
        ALL,
        ALL,
        False,
        VIT,
        corruption="dilate",
        image_size=VIT_SIZE,
    ),
    HeldoutTask(
        "split5", f"{MOBILENET}, output: digits 0 1 5 6 8 -> 2 3 4 7 9", SPLIT_SOURCE, SPLIT_TARGET, False, MOBILENET
    ),
)
"""The second held-out suite's tasks: two input-level and two output-level shifts over three backbone families."""
