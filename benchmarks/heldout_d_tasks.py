"""The tasks of the fourth held-out suite (``heldout_d``): shifts and backbones that no earlier suite uses.

Built like the earlier held-out suites' tasks (:mod:`benchmarks.heldout_tasks`, :mod:`benchmarks.heldout_b_tasks`,
:mod:`benchmarks.heldout_c_tasks`: a source model trained here from the digits by the quick start's source recipe,
then a few-shot target task), after all three had been run and seen:

- **input-level shifts** (the source model is trained on all ten clean digits; the target is the same ten digits
  with a fixed corruption of every scan, :class:`~benchmarks.heldout_tasks.CorruptedDigits`): upside down, and
  outlined strokes (the morphological gradient: the edges of a stroke bright, its inside dark);
- **output-level shifts** (new labels on clean scans): digits 4-9 -> 0-3, and 1 2 3 5 7 -> 0 4 6 8 9;
- **four architectures**: a ResNet (``resnet34``), a RegNet (``regnety_004``), a MobileNet (``mobilenetv2_100``)
  and a ConvNeXt (``convnext_femto``), none of them used by the development suite or an earlier held-out suite. A
  ViT was tried first (``deit_tiny_patch16_224`` at 64 px), but the source recipe, from random init, left it with a
  source test accuracy far below every other source's: a source with little to transfer. It was replaced before
  any target run was scored.
"""

from __future__ import annotations

from benchmarks.heldout_tasks import HeldoutTask

ALL = tuple(range(10))
NO_LOOP, LOOP = (1, 2, 3, 5, 7), (0, 4, 6, 8, 9)
RESNET, REGNET, MOBILENET, CONVNEXT = "resnet34", "regnety_004", "mobilenetv2_100", "convnext_femto"
TASKS = (
    HeldoutTask("flip", f"{MOBILENET}, input: 0-9 -> 0-9 upside down", ALL, ALL, False, MOBILENET, "flip"),
    HeldoutTask("split4", f"{RESNET}, output: digits 4-9 -> 0-3", tuple(range(4, 10)), (0, 1, 2, 3), False, RESNET),
    HeldoutTask("outline", f"{CONVNEXT}, input: 0-9 -> 0-9 outlined strokes", ALL, ALL, False, CONVNEXT, "outline"),
    HeldoutTask("loops", f"{REGNET}, output: digits 1 2 3 5 7 -> 0 4 6 8 9", NO_LOOP, LOOP, False, REGNET),
)
"""The fourth held-out suite's tasks: two input-level and two output-level shifts over four architectures."""
