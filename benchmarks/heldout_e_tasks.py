"""The tasks of the fifth held-out suite (``heldout_e``), built for the LR finder's report alone.

Built like the earlier held-out suites' tasks (:mod:`benchmarks.heldout_tasks` and the second to fourth: a source
model trained here from the digits by the quick start's source recipe, then a few-shot target task), after all four
had been run and seen, and after the range test's fixed costs were cut (its rule and settings unchanged):

- **input-level shifts** (the source model is trained on all ten clean digits; the target is the same ten digits
  with a fixed corruption of every scan, :class:`~benchmarks.heldout_tasks.CorruptedDigits`): scans at two levels
  (black or full intensity), and scans moved two pixels to the right;
- **output-level shifts** (new labels on clean scans): digits 0 5 6 7 8 9 -> 1 2 3 4, and digits 2-9 -> 0 1 (two
  classes, twenty training scans: the smallest task of any suite, where a fit is shortest);
- **four architectures**: a ResNet (``resnet18d``), a RegNet (``regnetx_002``), a MobileNet
  (``mobilenetv3_large_100``) and a ConvNeXt (``convnextv2_femto``), none of them used by the development suite or
  an earlier held-out suite.

Only the LR finder is reported on them (:mod:`benchmarks.heldout_e_lr_finder`, which runs the control policy,
``auto``'s fallback, at the grid's learning rates): a later report of ``auto`` needs tasks of its own.
"""

from __future__ import annotations

from benchmarks.heldout_tasks import HeldoutTask

ALL = tuple(range(10))
RESNET, REGNET, MOBILENET, CONVNEXT = "resnet18d", "regnetx_002", "mobilenetv3_large_100", "convnextv2_femto"
TASKS = (
    HeldoutTask("binary", f"{RESNET}, input: 0-9 -> 0-9 at two levels", ALL, ALL, False, RESNET, "binarize"),
    HeldoutTask(
        "split6", f"{MOBILENET}, output: digits 0 5-9 -> 1-4", (0, 5, 6, 7, 8, 9), (1, 2, 3, 4), False, MOBILENET
    ),
    HeldoutTask("shifted", f"{CONVNEXT}, input: 0-9 -> 0-9 moved right", ALL, ALL, False, CONVNEXT, "shift"),
    HeldoutTask("split2", f"{REGNET}, output: digits 2-9 -> 0 1", tuple(range(2, 10)), (0, 1), False, REGNET),
)
"""The fifth held-out suite: two input-level and two output-level shifts over four architectures of three families."""
