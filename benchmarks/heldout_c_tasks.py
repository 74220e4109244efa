"""The tasks of the third held-out suite (``heldout_c``): shifts and backbones that no earlier suite uses.

Built like the first two held-out suites' tasks (:mod:`benchmarks.heldout_tasks`, :mod:`benchmarks.heldout_b_tasks`:
a source model trained here from the digits by the quick start's source recipe, then a few-shot target task), after
both had been run and seen, so that a rule changed since can still be checked on tasks nobody has looked at:

- **input-level shifts** (the source model is trained on all ten clean digits; the target is the same ten digits
  with a fixed corruption of every scan, :class:`~benchmarks.heldout_tasks.CorruptedDigits`): pixelated (every 2x2
  block of a scan takes its mean), and an ink blot (a 3x3 square at full intensity, at a fixed place per scan);
- **output-level shifts** (new labels on clean scans): digits 5-9 -> 0-4 (the quick start's split reversed), and
  the curved digits 0, 3, 6, 8, 9 -> the straight-stroked 1, 4, 7;
- **four backbone families**: a ResNet (``resnet26d``), an EfficientNet (``efficientnet_b0``), a ConvNeXt
  (``convnextv2_atto``) and a convolution-attention hybrid (``efficientvit_b0``, at 64 px: its last two stages
  attend over 4x4 and 2x2 tokens), none of them used by the development suite (``resnet10t``), the first held-out
  suite (``resnet14t``, ``mobilenetv3_small_100``, ``convnext_atto``) or the second (``resnet18``,
  ``mobilenetv4_conv_small``, ``test_vit``).
"""

from __future__ import annotations

from benchmarks.heldout_tasks import HeldoutTask

ALL = tuple(range(10))
CURVED, STRAIGHT = (0, 3, 6, 8, 9), (1, 4, 7)
RESNET, EFFICIENTNET, CONVNEXT, HYBRID = "resnet26d", "efficientnet_b0", "convnextv2_atto", "efficientvit_b0"
HYBRID_SIZE = 64
"""Input size (px) of the hybrid's task: 4x4 and 2x2 tokens in its attention stages (at 32 px: 2x2 and 1x1)."""
TASKS = (
    HeldoutTask(
        "pixelate", f"{CONVNEXT}, input: 0-9 -> 0-9 pixelated (2x2 blocks)", ALL, ALL, False, CONVNEXT, "pixelate"
    ),
    HeldoutTask(
        "reverse",
        f"{EFFICIENTNET}, output: digits 5-9 -> 0-4",
        tuple(range(5, 10)),
        tuple(range(5)),
        False,
        EFFICIENTNET,
    ),
    HeldoutTask(
        "blot",
        f"{HYBRID} at {HYBRID_SIZE} px, input: 0-9 -> 0-9 with an ink blot",
        ALL,
        ALL,
        False,
        HYBRID,
        corruption="blot",
        image_size=HYBRID_SIZE,
    ),
    HeldoutTask("straight", f"{RESNET}, output: digits 0 3 6 8 9 -> 1 4 7", CURVED, STRAIGHT, False, RESNET),
)
"""The third held-out suite's tasks: two input-level and two output-level shifts over four backbone families."""
