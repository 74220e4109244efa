"""Second held-out suite: the freezing policies on fresh tasks, built after the first held-out suite had been seen.

Once the first held-out suite (:mod:`benchmarks.heldout`) had been run and its results read, it could no longer tell
whether a rule changed afterwards generalises. This suite's tasks (:mod:`benchmarks.heldout_b_tasks`: a mirror and
a stroke dilation, digits 3-9 -> 0-2 and 0 1 5 6 8 -> 2 3 4 7 9, on ``resnet18``, ``mobilenetv4_conv_small`` and
``test_vit``) share no shift and no backbone with the development suite or the first held-out suite. The protocol,
the policies, the learning-rate selection on validation, the goals and the tables are the first suite's
(:func:`benchmarks.heldout.run_suite`), over :data:`SUITE`'s ten seeds (the first suite's five were too few for the
paired noise); the section goes to :data:`SUITE`'s files under the anchor ``heldout-b``.
The suite is meant to be run once, after the rule is fixed; its section says so and publishes the misses as they
come.
"""

from __future__ import annotations

from typing import Any

from benchmarks.heldout import Suite, run_suite
from benchmarks.heldout_b_tasks import TASKS

SUITE = Suite(
    name="heldout_b",
    tasks=TASKS,
    section_file="heldout_b_section.md",
    decisions_file="heldout_b_auto_decisions.md",
    anchor="heldout-b",
    heading="Second held-out suite: fresh tasks, built after the first was seen",
    label="held-out B",
    history="A second held-out suite, built after the first held-out suite had been run and seen, so that `auto`"
    " could be checked again on tasks nobody had looked at (a rule changed after the first suite's results would be"
    " checked here; the rule run here is the one the first suite ran). It was run once; nothing in `auto` or in the"
    " benchmark was tuned on it, and its misses are published as they came.",
    seeds=tuple(range(10)),
)
"""The second held-out suite: :data:`benchmarks.heldout_b_tasks.TASKS`, its own files, heading and ten seeds (those
its published section was run with)."""


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Select each policy's learning rate on validation, then every task x policy x shots x seed on the test split."""
    return run_suite(SUITE, quick, out_dir)
