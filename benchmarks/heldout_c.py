"""Third held-out suite: the freezing policies on fresh tasks, built after the first two held-out suites had been seen.

Once the first two held-out suites (:mod:`benchmarks.heldout`, :mod:`benchmarks.heldout_b`) had been run and their
results read, neither could tell whether a rule changed afterwards (``AutoFreeze``'s cap on the trials' cost,
``max_trial_share``) generalises. This suite's tasks (:mod:`benchmarks.heldout_c_tasks`: pixelated scans and an ink
blot, digits 5-9 -> 0-4 and 0 3 6 8 9 -> 1 4 7, on ``resnet26d``, ``efficientnet_b0``, ``convnextv2_atto`` and
``efficientvit_b0``) share no shift and no backbone with the development suite or either earlier held-out suite. The
protocol, the policies, the learning-rate selection on validation, the goals and the tables are the first suite's
(:func:`benchmarks.heldout.run_suite`), over :data:`SUITE`'s ten seeds; the section goes to :data:`SUITE`'s files
under the anchor ``heldout-c``. The suite is meant to be run once, after the rule is fixed; its section says so and
publishes the misses as they come.
"""

from __future__ import annotations

from typing import Any

from benchmarks.heldout import Suite, run_suite
from benchmarks.heldout_c_tasks import TASKS

SUITE = Suite(
    name="heldout_c",
    tasks=TASKS,
    section_file="heldout_c_section.md",
    decisions_file="heldout_c_auto_decisions.md",
    anchor="heldout-c",
    heading="Third held-out suite: fresh tasks, built after the first two were seen",
    label="held-out C",
    history="A third held-out suite, built after the first two had been run and seen, so that a rule changed after"
    " them (AutoFreeze's cap on the trials' cost, `max_trial_share`) is checked on tasks nobody had looked at. It was"
    " run once; nothing in `auto` or in the benchmark was tuned on it, and its misses are published as they came.",
    seeds=tuple(range(10)),
)
"""The third held-out suite: :data:`benchmarks.heldout_c_tasks.TASKS`, its own files, heading and ten seeds."""


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Select each policy's learning rate on validation, then every task x policy x shots x seed on the test split."""
    return run_suite(SUITE, quick, out_dir)
