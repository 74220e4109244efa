"""The quick start's task against the peers: timm, Lightning's ``BackboneFinetuning`` and fastai's ``fine_tune``.

Task: the quick start's (``recipes/quickstart.yaml``): digits 0-4 -> 5-9, ``resnet10t`` from the same cached source
weights (:func:`benchmarks.common.source_weights`, the quick start's source run at its 32 px), the same 10 labelled
scans per class drawn by the seed, batch 16, the recipe's digit-safe augmentation and :data:`EPOCHS` epochs for
every method. The methods, each written as its documentation shows (:mod:`benchmarks.peer_recipes`):

1. a plain timm + PyTorch full fine-tune (AdamW, cosine);
2. Lightning's ``BackboneFinetuning`` callback at its defaults on a minimal LightningModule;
3. fastai's ``vision_learner`` + ``fine_tune`` (an optional dependency: ``pip install lit-transfer[peers]``; without
   it the row is skipped with the reason);
4. lit_transfer's quick-start recipe with ``freeze: auto``;
5. lit_transfer's quick-start recipe as shipped.

Protocol: every method runs every learning rate of :data:`LR_GRID` on every seed of :data:`SEEDS`. The runs are
interleaved: round ``r`` runs every (method, lr) once on seed ``r``, the method order rotated by one per round, so
the machine's noise falls on all methods alike. Each method's learning rate is the one with the best final
validation accuracy averaged over the seeds (the validation split, never the test split); all figures below are
those runs'. Every run records its wall time (from its first line, building data and model included) and its
validation accuracy at the end of each epoch.

Metrics: final test accuracy (final weights, mean ± std over seeds; paired differences against the best peer with
their standard error), and *time to target*: in each round, the target is :data:`TARGET_FRACTION` of the best final
validation accuracy among all methods, and a method's time to target is the wall time at which its validation
accuracy first reaches it, as a ratio to the fastest peer (methods 1-3) in that round (median and range over the
rounds). Goals for ``auto`` and the recipe: time to target <= :data:`RATIO_GOAL` of the fastest peer (median) and
mean test accuracy >= the best peer's.

``--quick``: the code path in about a minute (a 2-epoch source, 2 epochs, one learning rate, one seed), no goals.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common, peer_recipes

LR_GRID = (1e-3, 3e-3, 1e-2)
SEEDS = tuple(range(12))
"""The rounds of the full run; with four, the paired standard errors of the accuracy differences were 2-4 points."""
NOISE = 1.0
"""Points of paired standard error above which an accuracy verdict is marked as within the seed noise."""
EPOCHS = 30
TARGET_FRACTION = 0.9
RATIO_GOAL = 0.4
IMAGE_SIZE = 32
"""The quick start's input size (the DigitsDataModule default its recipe keeps)."""
QUICK: dict[str, Any] = {"source_epochs": 2, "epochs": 2, "lrs": (3e-3,), "seeds": (0,)}
"""``--quick``: a 2-epoch source, 2 epochs, one learning rate, one seed; no goals."""
PLOT_FILE = "peers_val_vs_time.png"


@dataclass(frozen=True)
class Method:
    """One row: its label, its recipe and whether it is a peer (the time and accuracy references)."""

    label: str
    train: Callable[[peer_recipes.Setting], peer_recipes.Curve]
    peer: bool


TIMM = Method("timm full fine-tune (plain PyTorch loop)", peer_recipes.plain_timm, True)
LIGHTNING = Method("Lightning BackboneFinetuning", peer_recipes.lightning_backbone_finetuning, True)
FASTAI = Method("fastai fine_tune", peer_recipes.fastai_fine_tune, True)
AUTO = Method("lit_transfer freeze: auto", peer_recipes.lit_transfer_auto, False)
RECIPE = Method("lit_transfer quick-start recipe", peer_recipes.lit_transfer_recipe, False)
METHODS = (TIMM, LIGHTNING, FASTAI, AUTO, RECIPE)


def methods() -> tuple[list[Method], dict[str, str]]:
    """The methods that can run here, and ``label -> reason`` for those skipped (fastai when it is missing)."""
    reason = peer_recipes.fastai_available()
    if reason is None:
        return list(METHODS), {}
    return [m for m in METHODS if m is not FASTAI], {FASTAI.label: reason}


def train_all(
    available: list[Method], weights: Any, lrs: tuple[float, ...], seeds: tuple[int, ...], epochs: int
) -> dict[str, dict[float, dict[int, peer_recipes.Curve]]]:
    """Every (method, lr) once per round, round ``r`` on seed ``seeds[r]`` with the method order rotated by ``r``."""
    curves: dict[str, dict[float, dict[int, peer_recipes.Curve]]] = {m.label: {lr: {} for lr in lrs} for m in available}
    for round_index, seed in enumerate(seeds):
        shift = round_index % len(available)
        order = available[shift:] + available[:shift]
        for lr in lrs:
            for method in order:
                print(f"[peers] seed {seed}, lr {lr:g}: {method.label}", file=sys.stderr, flush=True)
                setting = peer_recipes.Setting(weights=weights, seed=seed, lr=lr, epochs=epochs)
                curves[method.label][lr][seed] = method.train(setting)
    return curves


def choose_lrs(curves: dict[str, dict[float, dict[int, peer_recipes.Curve]]]) -> dict[str, float]:
    """Each method's lr: the best final validation accuracy averaged over the seeds (the first on a tie)."""
    return {
        name: max(by_lr, key=lambda lr: statistics.fmean(c.val_acc[-1] for c in by_lr[lr].values()))
        for name, by_lr in curves.items()
    }


def time_to(curve: peer_recipes.Curve, target: float) -> float:
    """Wall time (s) of the first epoch end whose validation accuracy reaches ``target``; NaN if none does."""
    return next((s for s, acc in zip(curve.seconds, curve.val_acc) if acc >= target), math.nan)


def ratios(runs: dict[str, dict[int, peer_recipes.Curve]], peers: list[str]) -> dict[str, Any]:
    """Per round: the target, each method's time to it and its ratio to the fastest peer's."""
    seeds = sorted(next(iter(runs.values())))
    rounds = []
    for seed in seeds:
        target = TARGET_FRACTION * max(runs[name][seed].val_acc[-1] for name in runs)
        times = {name: time_to(runs[name][seed], target) for name in runs}
        reached = [times[p] for p in peers if not math.isnan(times[p])]
        fastest = min(reached) if reached else math.nan
        rounds.append(
            {"seed": seed, "target": target, "seconds": times, "ratio": {n: t / fastest for n, t in times.items()}}
        )
    return {"rounds": rounds}


def paired(values: list[float], reference: list[float]) -> tuple[float, float]:
    """Mean of the per-seed differences and its standard error (0 for one seed)."""
    diffs = [a - b for a, b in zip(values, reference)]
    mean = statistics.fmean(diffs)
    return mean, statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0


def _median_range(values: list[float]) -> str:
    if any(math.isnan(v) for v in values):
        reached = [v for v in values if not math.isnan(v)]
        return f"not reached in {len(values) - len(reached)} of {len(values)} round(s)"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def plot(runs: dict[str, dict[int, peer_recipes.Curve]], seed: int, target: float, out_dir: str) -> str:
    """Validation accuracy vs wall time of the first seed, one line per method, with the round's target."""
    figure, axes = common.new_figure(7.5, 4.2)
    for name, by_seed in runs.items():
        curve = by_seed[seed]
        style = {"linewidth": 2.2} if name.startswith("lit_transfer") else {"linestyle": "--"}
        axes.plot(curve.seconds, curve.val_acc, marker=".", label=name, **style)
    axes.axhline(target, color="grey", linewidth=0.8)
    axes.set_xlabel("wall time (s), data and model set-up included")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"seed {seed}; grey: the round's target ({TARGET_FRACTION:.0%} of the best final)", fontsize=9)
    axes.legend(fontsize=7, loc="lower right")
    return common.save_figure(figure, out_dir, PLOT_FILE)


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Train every method, lr and seed interleaved; the table, the plot and (full mode) the goals."""
    common.set_threads(1)
    common.quiet()
    epochs = QUICK["epochs"] if quick else EPOCHS
    lrs: tuple[float, ...] = QUICK["lrs"] if quick else LR_GRID
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    weights, meta = common.source_weights(IMAGE_SIZE, epochs=QUICK["source_epochs"] if quick else None)
    available, skipped = methods()
    curves = train_all(available, weights, lrs, seeds, epochs)
    chosen = choose_lrs(curves)
    runs = {name: curves[name][chosen[name]] for name in curves}
    peers = [m.label for m in available if m.peer]
    timing = ratios(runs, peers)
    test = {name: [runs[name][s].test_acc for s in seeds] for name in runs}
    best_peer = max(peers, key=lambda name: statistics.fmean(test[name]))
    first = timing["rounds"][0]
    plot(runs, first["seed"], first["target"], out_dir)
    result = common.jsonable(  # as results.json stores it, so that `report` reads a run and a stored result alike
        {
            "chosen_lr": chosen,
            "validation": {
                n: {lr: [c.val_acc[-1] for c in by_seed.values()] for lr, by_seed in b.items()}
                for n, b in curves.items()
            },
            "test": test,
            "best_peer": best_peer,
            "paired_vs_best_peer": {
                n: dict(zip(("mean", "stderr"), paired(test[n], test[best_peer]), strict=True)) for n in runs
            },
            "time_to_target": timing["rounds"],
            "curves": {
                n: {s: {"seconds": c.seconds, "val_acc": c.val_acc} for s, c in by_seed.items()}
                for n, by_seed in runs.items()
            },
            "skipped": skipped,
            "config": {"epochs": epochs, "lrs": list(lrs), "seeds": list(seeds), "source_epochs": meta["epochs"]},
        }
    )
    markdown, targets = report(result, quick)
    return {**result, "targets": targets, "markdown": markdown}


def report(result: dict[str, Any], quick: bool) -> tuple[str, dict[str, bool]]:
    """The section's markdown and (full mode) the goals, from a result as :func:`run` returns and stores it.

    ``python -m benchmarks.peers`` renders the published result again (``docs/benchmarks``) after a change to this
    function, without training.
    """
    config, test, best_peer = result["config"], result["test"], result["best_peer"]
    seeds = [str(s) for s in config["seeds"]]
    names = list(test)
    per_method_ratios = {name: [r["ratio"][name] for r in result["time_to_target"]] for name in names}
    differences = {n: (d["mean"], d["stderr"]) for n, d in result["paired_vs_best_peer"].items()}
    rows = []
    for name in names:
        validation = result["validation"][name]
        by_lr = " / ".join(f"{lr:g}: {statistics.fmean(validation[str(lr)]):.1f}" for lr in config["lrs"])
        diff, error = differences[name]
        run_seconds = statistics.median(result["curves"][name][s]["seconds"][-1] for s in seeds)
        rows.append(
            [
                name,
                f"{result['chosen_lr'][name]:g}",
                by_lr,
                common.fmt_pm(test[name]),
                "(best peer)" if name == best_peer else f"{diff:+.1f} ± {error:.1f}",
                _median_range(per_method_ratios[name]),
                f"{run_seconds:.0f}",
            ]
        )
    rows += [[name, "-", "-", "skipped", "-", "-", reason] for name, reason in result["skipped"].items()]
    targets: dict[str, bool] = {}
    lines = []
    if not quick:
        for name in (AUTO.label, RECIPE.label):
            values = per_method_ratios[name]
            reached = not any(math.isnan(v) for v in values)
            fast = reached and statistics.median(values) <= RATIO_GOAL
            accurate = statistics.fmean(test[name]) >= statistics.fmean(test[best_peer])
            targets[f"{name}: time to target <= {RATIO_GOAL} of the fastest peer"] = fast
            targets[f"{name}: test accuracy >= the best peer's"] = accurate
            median = f" (median {statistics.median(values):.3f})" if reached else ""
            lines.append(
                f"{name}: time to target {_median_range(values)}{median} of the fastest peer (goal <= {RATIO_GOAL}:"
                f" **{common.verdict(fast)}**); test accuracy {common.fmt_pm(test[name])} % against"
                f" {common.fmt_pm(test[best_peer])} % for {best_peer}, paired difference {differences[name][0]:+.1f}"
                f" ± {differences[name][1]:.1f} (goal >= 0: **{common.verdict(accurate)}**)."
            )
            if differences[name][1] > NOISE:
                lines.append(
                    f"**Below the seed noise** on {name}'s accuracy: the paired standard error against {best_peer} is"
                    f" {differences[name][1]:.1f} points, more than {NOISE:g}; the accuracy verdict above needs more"
                    " seeds before it means anything."
                )
    else:
        lines.append("Quick mode: one seed, one learning rate, 2 epochs; no goals are checked.")
    lrs = ", ".join(f"{lr:g}" for lr in config["lrs"])
    markdown = "\n\n".join(
        [
            "### Against the peers: timm, Lightning BackboneFinetuning, fastai {#peers}",
            f"The quick start's task: digits 0-4 -> 5-9, `{common.BACKBONE}` from the same source weights"
            f" ({config['source_epochs']}-epoch source run, {IMAGE_SIZE} px), the same {len(seeds)} seed(s) drawing"
            " the same 10 labelled scans per class for every method, batch 16, the quick start recipe's augmentation,"
            f" {config['epochs']} epochs. Each method as its documentation shows it (benchmarks/peer_recipes.py);"
            f" each method's learning rate chosen from {lrs} by the final validation accuracy averaged over the"
            " seeds, never the test split. Runs interleaved: round r runs every method and learning rate on seed r,"
            " the method order rotated per round. Time to target: the wall time (data and model set-up included,"
            " validation after every epoch, one torch thread) at which validation accuracy first reaches"
            f" {TARGET_FRACTION:.0%} of the best final validation accuracy of the round, divided by the fastest"
            " peer's (rows 1-3) in the same round; median [range] over the rounds. Test accuracy (%) of the final"
            " weights on the fixed held-out split, mean ± std over the seeds; the paired difference against the best"
            " peer is the mean ± standard error of the per-seed differences.",
            common.md_table(
                [
                    "Method",
                    "LR",
                    "Final validation (%) by LR",
                    "Test accuracy (%)",
                    "vs best peer (points)",
                    "Time to target / fastest peer",
                    "Run time (s), median",
                ],
                rows,
            ),
            *lines,
            f"![Validation accuracy vs wall time, seed {result['time_to_target'][0]['seed']}]({PLOT_FILE})",
        ]
    )
    return markdown, targets


def rerender(folder: str = "docs/benchmarks") -> None:
    """Render the peers result in ``folder``'s ``results.json`` again with :func:`report`, and the page."""
    from benchmarks import run  # the page writer; it imports every benchmark by name

    path = Path(folder) / "results.json"
    page = json.loads(path.read_text())
    result = page["results"]["peers"]
    result["markdown"], result["targets"] = report(result, bool(page.get("quick")))
    path.write_text(json.dumps(page, indent=2) + "\n")
    run.main(["--merge", folder, "--out", folder, *(["--quick"] if page.get("quick") else [])])


if __name__ == "__main__":
    rerender(*sys.argv[1:])
