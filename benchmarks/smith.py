"""Smith et al. 2018: increase the batch size instead of decaying the learning rate (``BatchSizeRamp``).

``test_resnet`` from scratch on all ten digits at 16x16, SGD (momentum 0.9, weight decay 5e-4), batch 16. The
step-decay baseline divides the LR by 4 at 1/3 and 2/3 of the epochs at a fixed batch; the ramp holds the LR
and multiplies the batch by 4 at the same epochs (``BatchSizeRamp(milestones={0: 1, e1: 4, e2: 16})``,
``lr_coupling="hold"``). Same epochs, so the ramp takes fewer optimizer steps. Test accuracy on the fixed split.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

BATCH, LR, FACTOR = 16, 0.05, 4


def one(ramp: bool, seed: int, epochs: int) -> dict[str, Any]:
    """A step-decay (``ramp=False``) or batch-ramp run."""
    import torch

    from lit_transfer import BatchSizeRamp

    e1, e2 = epochs // 3, 2 * epochs // 3
    optimizer = lambda groups: torch.optim.SGD(groups, lr=LR, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    if ramp:
        return common.digits_run(
            seed=seed,
            epochs=epochs,
            batch_size=BATCH,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0),
            callbacks=[BatchSizeRamp(milestones={0: 1, e1: FACTOR, e2: FACTOR * FACTOR})],
            reload_every_epoch=True,
        )
    return common.digits_run(
        seed=seed,
        epochs=epochs,
        batch_size=BATCH,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [e1, e2], gamma=1 / FACTOR),
    )


def plot(results: dict[str, list[dict[str, Any]]], out_dir: str) -> str:
    """LR and global batch per optimizer step of both schedules (seed 0), against samples seen."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2), dpi=110)
    lr_axes, batch_axes = figure.subplots(2, 1, sharex=True)
    for name, runs in results.items():
        schedule = runs[0]["schedule"]
        samples, seen = [], 0
        for row in schedule:
            seen += row["batch_size"]
            samples.append(seen)
        lrs = [next(v for k, v in row.items() if k.startswith("lr/")) for row in schedule]
        lr_axes.step(samples, lrs, where="post", label=name)
        batch_axes.step(samples, [row["batch_size"] for row in schedule], where="post", label=name)
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_yscale("log")
    batch_axes.set_ylabel("global batch")
    batch_axes.set_yscale("log")
    batch_axes.set_xlabel("training samples seen")
    lr_axes.legend(fontsize=7)
    lr_axes.set_title("Smith et al.: step decay vs batch ramp (seed 0)")
    return common.save_figure(figure, out_dir, "smith_schedules.png")


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Both schedules x seeds; accuracy match and step savings."""
    common.set_threads(1)
    common.quiet()
    epochs = 6 if quick else 12
    seeds = (0,) if quick else (0, 1, 2)
    names = {False: "step decay (LR / 4 at 1/3, 2/3)", True: "batch ramp (batch x 4 at 1/3, 2/3)"}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for seed in seeds:
        for ramp, name in names.items():
            results[name].append(one(ramp, seed, epochs))
    accs = {name: [r["acc"] for r in runs] for name, runs in results.items()}
    steps = {name: runs[0]["steps"] for name, runs in results.items()}
    decay, ramp_name = names[False], names[True]
    gap = common.mean_std(accs[ramp_name])[0] - common.mean_std(accs[decay])[0]
    fewer = steps[decay] / steps[ramp_name]
    match, saving = gap >= -0.5, fewer >= 2.0
    rows = [
        [name, common.fmt_pm(accs[name]), steps[name], f"{common.mean_std([r['seconds'] for r in runs])[0]:.1f}"]
        for name, runs in results.items()
    ]
    image = plot(results, out_dir)
    markdown = "\n\n".join(
        [
            "### Smith et al.: batch ramp instead of LR decay (`BatchSizeRamp`)",
            f"`{common.SMALL_BACKBONE}` from scratch, all ten digits at {common.SMALL_SIZE}x{common.SMALL_SIZE}, SGD"
            f" (lr {LR}, momentum 0.9, wd 5e-4), initial batch {BATCH}, {epochs} epochs; test accuracy (%) on the"
            f" fixed split, mean ± std over {len(seeds)} seed(s).",
            common.md_table(["Schedule", "Test acc (%)", "Optimizer steps", "Fit time (s)"], rows),
            f"Ramp vs step decay: {gap:+.2f} point (target: within 0.5 point: **{common.verdict(match)}**), with"
            f" {fewer:.2f}x fewer optimizer steps (target >= 2x: **{common.verdict(saving)}**).",
            f"![schedules]({image})",
        ]
    )
    return {
        "acc": accs,
        "steps": steps,
        "targets": {"ramp within 0.5 point of step decay": match, ">= 2x fewer optimizer steps": saving},
        "markdown": markdown,
    }
