"""Goyal et al. 2017: a k-times larger batch with the linear scaling rule and gradual warmup (``LRScaling``).

``test_resnet`` (timm's small ResNet) from scratch on all ten digits at 16x16 — small enough for the 3 seeds x
4 settings x 3 budgets on two CPU cores — SGD (momentum 0.9, weight decay 5e-4) with a per-step cosine decay, the
same number of epochs for every setting. Batch B with lr η; batch kB with lr η (no scaling); kB with
``LRScaling`` (linear rule, η·k) without warmup; kB with ``LRScaling`` and a gradual warmup from η over half an
epoch. Test accuracy on the fixed split. The paper's claims are about a fixed epoch budget; the digits are easy
enough that a generous budget lets every setting converge, so the table sweeps the budget (4, 6 and 8 epochs)
and checks both claims at each.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

BASE_BATCH, K, BASE_LR = 32, 4, 0.02


def settings(warmup_epochs: float) -> dict[str, dict[str, Any]]:
    """Setting name -> batch size and callbacks."""
    from lit_transfer import LRScaling

    big = BASE_BATCH * K
    return {
        f"B={BASE_BATCH}, lr {BASE_LR}": {"batch": BASE_BATCH, "callbacks": []},
        f"B={big}, lr {BASE_LR} (no scaling)": {"batch": big, "callbacks": []},
        f"B={big}, linear scaling (lr {BASE_LR * K:g}), no warmup": {
            "batch": big,
            "callbacks": [LRScaling(rule="linear", base_batch_size=BASE_BATCH)],
        },
        f"B={big}, linear scaling + {warmup_epochs:g}-epoch warmup": {
            "batch": big,
            "callbacks": [LRScaling(rule="linear", base_batch_size=BASE_BATCH, warmup_epochs=warmup_epochs)],
        },
    }


def one(batch: int, callbacks: list[Any], seed: int, epochs: int) -> dict[str, Any]:
    """One training run."""
    import torch

    from lit_transfer.optim import WarmupCosine

    steps_per_epoch = -(-1078 // batch)  # training scans of all ten digits (the fixed split)
    return common.digits_run(
        seed=seed,
        epochs=epochs,
        batch_size=batch,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=BASE_LR, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(epochs * steps_per_epoch)),
        scheduler_interval="step",
        callbacks=callbacks,
    )


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Every setting x seed x epoch budget; the two Goyal claims at each budget."""
    common.set_threads(1)
    common.quiet()
    budgets = (4,) if quick else (4, 6, 8)
    seeds = (0,) if quick else (0, 1, 2)
    warmup = 0.5
    names = list(settings(warmup))
    base, unscaled, _, scaled = names
    results: dict[int, dict[str, list[dict[str, Any]]]] = {e: {name: [] for name in names} for e in budgets}
    for epochs in budgets:
        for seed in seeds:
            for name, spec in settings(warmup).items():  # fresh callbacks per run
                results[epochs][name].append(one(spec["batch"], spec["callbacks"], seed, epochs))
    accs = {e: {name: [r["acc"] for r in runs] for name, runs in by_name.items()} for e, by_name in results.items()}
    mean = {e: {name: common.mean_std(a)[0] for name, a in by_name.items()} for e, by_name in accs.items()}
    targets: dict[str, bool] = {}
    verdicts = []
    for e in budgets:
        match = mean[e][scaled] >= mean[e][base] - 1.0
        worse = mean[e][unscaled] <= mean[e][scaled] - 2.0
        targets[f"{e} epochs: kB scaled+warmup within 1 point of B"] = match
        targets[f"{e} epochs: kB unscaled >= 2 points worse"] = worse
        verdicts.append(
            f"{e} epochs: scaled + warmup vs B {mean[e][scaled] - mean[e][base]:+.1f} point"
            f" (**{common.verdict(match)}**), unscaled vs scaled + warmup {mean[e][unscaled] - mean[e][scaled]:+.1f}"
            f" point (**{common.verdict(worse)}**)"
        )
    rows = [
        [name, *(common.fmt_pm(accs[e][name]) for e in budgets), results[budgets[-1]][name][0]["steps"]]
        for name in names
    ]
    image_lr = _plot_schedules(results[budgets[-1]], names, out_dir)
    image_budget = _plot_budgets(mean, budgets, names, out_dir) if len(budgets) > 1 else None
    markdown = "\n\n".join(
        [
            "### Goyal et al.: linear scaling rule + warmup (`LRScaling`)",
            f"`{common.SMALL_BACKBONE}` from scratch, all ten digits at {common.SMALL_SIZE}x{common.SMALL_SIZE}, SGD"
            f" (momentum 0.9, wd 5e-4) + per-step cosine, k = {K}, warmup {warmup:g} epoch; the same number of"
            f" epochs for every setting, swept over {', '.join(map(str, budgets))}; test accuracy (%) on the fixed"
            f" split, mean ± std over {len(seeds)} seed(s).",
            common.md_table(
                ["Setting", *(f"{e} epochs" for e in budgets), f"Optimizer steps ({budgets[-1]} epochs)"], rows
            ),
            "Targets: kB with scaling + warmup within 1 point below B; kB without scaling clearly worse (>= 2 points"
            " below kB with scaling + warmup). " + "; ".join(verdicts) + ".",
            *([f"![Accuracy vs epoch budget]({image_budget})"] if image_budget else []),
            f"![LR schedules]({image_lr})",
        ]
    )
    return {"acc": accs, "targets": targets, "markdown": markdown}


def _plot_schedules(results: dict[str, list[dict[str, Any]]], names: list[str], out_dir: str) -> str:
    figure, axes = common.new_figure()
    for name in names:
        schedule = results[name][0]["schedule"]
        lrs = [next(v for k, v in row.items() if k.startswith("lr/")) for row in schedule]
        axes.plot([row["step"] for row in schedule], lrs, label=name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate (first group)")
    axes.set_title("Goyal et al.: LR per step as applied (seed 0)")
    axes.legend(fontsize=7)
    return common.save_figure(figure, out_dir, "goyal_lr_schedules.png")


def _plot_budgets(mean: dict[int, dict[str, float]], budgets: tuple[int, ...], names: list[str], out_dir: str) -> str:
    figure, axes = common.new_figure()
    for name in names:
        axes.plot(budgets, [mean[e][name] for e in budgets], marker="o", label=name)
    axes.set_xlabel("epochs (same for every setting)")
    axes.set_ylabel("test accuracy (%), mean over seeds")
    axes.set_xticks(list(budgets))
    axes.set_title("Goyal et al.: accuracy vs epoch budget")
    axes.legend(fontsize=7)
    return common.save_figure(figure, out_dir, "goyal_accuracy_vs_budget.png")
