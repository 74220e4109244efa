"""The LR finder on the third held-out suite (:mod:`benchmarks.heldout_c`): tasks nobody had looked at.

The finder's rule and settings were chosen on the development task of :mod:`benchmarks.lr_finder`; this reports them
once on :data:`benchmarks.heldout_c_tasks.TASKS` with the machinery and protocol of
:mod:`benchmarks.heldout_lr_finder` (:func:`~benchmarks.heldout_lr_finder.run_suite`), at the third suite's ten seeds.
"""

from __future__ import annotations

from typing import Any

from benchmarks.heldout_c import SUITE as HELDOUT_C
from benchmarks.heldout_lr_finder import FinderSuite, run_suite

SUITE = FinderSuite(
    name="heldout_c_lr_finder",
    tasks=HELDOUT_C.tasks,
    seeds=HELDOUT_C.seeds,
    quick_tasks=("reverse", "straight"),
    section_file="heldout_c_lr_finder_section.md",
    anchor="heldout-c-lr-finder",
    heading="LR finder on the third held-out suite",
    label="held-out C",
    history="The finder's rule and settings were chosen on the development task (`benchmarks/lr_finder.py`) and"
    " have not changed since its report on the first held-out suite; this is its report on the third suite's"
    " tasks, run once, nothing tuned on it, misses published as they came.",
)
"""The finder on :data:`benchmarks.heldout_c_tasks.TASKS` at the third suite's seeds."""


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Choose the control policy's LR on validation, then per task and seed the grid's and the finder's fine-tune."""
    return run_suite(SUITE, quick, out_dir)
