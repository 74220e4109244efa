"""The LR finder on the fourth held-out suite (:mod:`benchmarks.heldout_d`): tasks nobody had looked at.

The finder's rule and settings were chosen on the development task of :mod:`benchmarks.lr_finder`; this reports them
once on :data:`benchmarks.heldout_d_tasks.TASKS` with the machinery and protocol of
:mod:`benchmarks.heldout_lr_finder` (:func:`~benchmarks.heldout_lr_finder.run_suite`), at the fourth suite's ten seeds,
against the grid's learning rate chosen as that suite chooses it (mean validation accuracy over its three seeds).
"""

from __future__ import annotations

from typing import Any

from benchmarks.heldout_d import SUITE as HELDOUT_D
from benchmarks.heldout_lr_finder import FinderSuite, run_suite

SUITE = FinderSuite(
    name="heldout_d_lr_finder",
    tasks=HELDOUT_D.tasks,
    seeds=HELDOUT_D.seeds,
    quick_tasks=("split4", "loops"),
    section_file="heldout_d_lr_finder_section.md",
    anchor="heldout-d-lr-finder",
    heading="LR finder on the fourth held-out suite",
    label="held-out D",
    history="The finder's rule and settings were chosen on the development task (`benchmarks/lr_finder.py`) and"
    " have not changed since its report on the first held-out suite; this is its report on the fourth suite's"
    " tasks, the grid's rate chosen on three validation seeds as that suite chooses it, run once, nothing tuned on"
    " it, misses published as they came.",
    select_seeds=HELDOUT_D.select_seeds,
)
"""The finder on :data:`benchmarks.heldout_d_tasks.TASKS` at the fourth suite's seeds."""


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Choose the control policy's LR on validation, then per task and seed the grid's and the finder's fine-tune."""
    return run_suite(SUITE, quick, out_dir)
