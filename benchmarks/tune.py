"""``lit-transfer tune`` against ``auto`` and the best fixed recipe, at equal wall-clock budgets.

Task: the transfer table's (:mod:`benchmarks.transfer_table`): digits 0-4 -> 5-9 with :data:`SHOTS` labelled scans
per class at its input size, from the same cached source weights, with its epochs, batch, AdamW, label smoothing
and digit-safe augmentation.

Arms, each scored with its final weights on the fixed held-out test split of digits 5-9, mean ± std over seeds
(the seed draws the few-shot scans, the initialisation, the order and the augmentation, and seeds the sampler):

- **fixed**: the transfer table's best row at its largest shot count, read from its generated results
  (``docs/benchmarks/results.json``, full mode), trained by the transfer table's own code. Its wall time is the
  unit budget: one fine-tune.
- **auto**: ``recipes/auto.yaml`` (AutoFreeze after a probe, the LR from a range test of the probe phase) through
  ``lit-transfer fit``.
- **tune at Bx**: ``lit-transfer tune --space recipes/tune_space.yaml --timeout <B x one fine-tune>`` (trials are
  chosen on the validation split of digits 5-9, never the test split; the median pruner); the test score is the
  best trial's final weights. A trial that started before the timeout runs to its end, so the time used is
  reported beside the budget.

Full: budgets 1x, 4x and 16x, seeds 0, 1, 2 (about 70 fine-tunes: run it alone). ``--quick``: a smoke test of the
code path (a 2-epoch source, 5 target epochs, budgets 1x and 4x, one seed), no thresholds.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common, transfer_table

SHOTS = 10
BUDGETS = (1, 4, 16)
SEEDS = (0, 1, 2)
QUICK: dict[str, Any] = {"source_epochs": 2, "epochs": 5, "budgets": (1, 4), "seeds": (0,)}
"""``--quick``: the code path in about two minutes (a 2-epoch source, 5 target epochs, budgets 1x and 4x, one seed)."""
RESULTS = Path("docs/benchmarks/results.json")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def best_fixed_recipe(epochs: int) -> str:
    """The transfer table's best row (its generated full results); the layer-decay full fine-tune before any run."""
    table = transfer_table.policies(epochs)
    saved: dict[str, Any] = {}
    if RESULTS.is_file():
        payload = json.loads(RESULTS.read_text())
        if not payload.get("quick"):
            saved = payload.get("results", {}).get("transfer_table", {}).get("best", {})
    name = str(saved.get("policy", ""))
    if name in table:
        return name
    return next(n for n in table if n.startswith("full_fine_tune + layer decay"))


def _base_args(weights: str, seed: int, epochs: int, root: Path) -> list[str]:
    """The transfer table's target run as ``lit-transfer`` arguments."""
    classes = ",".join(str(c) for c in common.TARGET_CLASSES)
    return [
        "--config",
        str(RECIPES / "defaults.yaml"),
        f"--model.backbone={common.BACKBONE}",
        f"--model.pretrained={weights}",
        f"--model.label_smoothing={transfer_table.LABEL_SMOOTHING}",
        f"--model.optimizer.init_args.lr={transfer_table.LR}",
        f"--model.optimizer.init_args.weight_decay={transfer_table.WEIGHT_DECAY}",
        f"--data.classes=[{classes}]",
        f"--data.shots_per_class={SHOTS}",
        f"--data.image_size={transfer_table.IMAGE_SIZE}",
        f"--data.batch_size={min(16, 5 * SHOTS)}",
        f"--data.seed={seed}",
        f"--data.train_transform={json.dumps(transfer_table.augmentation())}",
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
    ]


def _test_final_weights(run_dir: Path, seed: int) -> float:
    """Test accuracy (%) of the newest ``last.ckpt`` under ``run_dir``."""
    from lit_transfer import TransferClassifier
    from lit_transfer.data import DigitsDataModule

    last = max(run_dir.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    model = TransferClassifier.load_from_checkpoint(last, weights_only=True)
    data = DigitsDataModule(
        classes=common.TARGET_CLASSES, image_size=transfer_table.IMAGE_SIZE, batch_size=64, seed=seed
    )
    return common.test_accuracy(common.make_trainer(), model, data)


def run_auto(weights: str, seed: int, epochs: int) -> float:
    """``recipes/auto.yaml`` through ``lit-transfer fit``; test accuracy (%)."""
    from lit_transfer.cli import main

    with tempfile.TemporaryDirectory() as root:
        args = _base_args(weights, seed, epochs, Path(root))
        main(["fit", *args[:2], "--config", str(RECIPES / "auto.yaml"), *args[2:]])
        return _test_final_weights(Path(root), seed)


def run_tune(weights: str, seed: int, epochs: int, budget_s: float) -> dict[str, Any]:
    """``lit-transfer tune`` for ``budget_s`` seconds; the best trial's test accuracy (%), trials and time used."""
    import optuna

    from lit_transfer.cli import main

    with tempfile.TemporaryDirectory() as root:
        storage = f"sqlite:///{Path(root) / 'study.db'}"
        start = time.perf_counter()
        main(
            [
                "tune",
                *_base_args(weights, seed, epochs, Path(root)),
                f"--space={RECIPES / 'tune_space.yaml'}",
                "--n_trials=null",
                f"--timeout={budget_s:.1f}",
                f"--storage={storage}",
                "--study_name=bench",
                f"--sampler_seed={seed}",
            ]
        )
        seconds = time.perf_counter() - start
        study = optuna.load_study(study_name="bench", storage=storage)
        best = study.best_trial
        states = [t.state.name for t in study.trials]
        return {
            "acc": _test_final_weights(Path(best.user_attrs["run_dir"]), seed),
            "seconds": seconds,
            "trials": len(states),
            "pruned": states.count("PRUNED"),
            "best_params": best.params,
        }


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Fixed, auto and tune at each budget, over the seeds; the table and one target."""
    common.set_threads(1)
    common.quiet()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = QUICK["epochs"] if quick else transfer_table.EPOCHS
    budgets: tuple[int, ...] = QUICK["budgets"] if quick else BUDGETS
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    source_epochs = QUICK["source_epochs"] if quick else transfer_table.SOURCE_EPOCHS
    weights, meta = common.source_weights(transfer_table.IMAGE_SIZE, epochs=source_epochs)
    fixed_name = best_fixed_recipe(epochs)
    fixed_spec = transfer_table.policies(epochs)[fixed_name]
    acc: dict[str, list[float]] = {"fixed": [], "auto": [], **{f"tune {b}x": [] for b in budgets}}
    used: dict[str, list[float]] = {f"tune {b}x": [] for b in budgets}
    trials: dict[str, list[int]] = {f"tune {b}x": [] for b in budgets}
    unit: list[float] = []
    for seed in seeds:
        start = time.perf_counter()
        acc["fixed"].append(transfer_table.train_target(fixed_spec, str(weights), SHOTS, seed, epochs))
        one = time.perf_counter() - start
        unit.append(one)
        acc["auto"].append(run_auto(str(weights), seed, epochs))
        for budget in budgets:
            result = run_tune(str(weights), seed, epochs, budget * one)
            key = f"tune {budget}x"
            acc[key].append(result["acc"])
            used[key].append(result["seconds"] / one)
            trials[key].append(result["trials"])
    rows = [[f"fixed: {fixed_name} (the transfer table's best)", "1x", "-", common.fmt_pm(acc["fixed"])]]
    rows.append(["auto (recipes/auto.yaml)", "~1x", "-", common.fmt_pm(acc["auto"])])
    for budget in budgets:
        key = f"tune {budget}x"
        rows.append(
            [
                "tune (recipes/tune_space.yaml)",
                f"{budget}x (used {common.mean_std(used[key])[0]:.1f}x)",
                common.fmt_pm([float(t) for t in trials[key]]),
                common.fmt_pm(acc[key]),
            ]
        )
    largest = f"tune {budgets[-1]}x"
    ahead = common.mean_std(acc[largest])[0] >= common.mean_std(acc["fixed"])[0] - 1.0
    target = f"tune at {budgets[-1]}x within 1 point of (or above) the best fixed recipe"
    markdown = "\n\n".join(
        [
            "### Hyper-parameter search: tune vs auto vs the best fixed recipe",
            f"The transfer table's task at {SHOTS} shots per class: digits 0-4 -> 5-9, `{common.BACKBONE}` from the"
            f" same source weights ({meta['epochs']}-epoch source), {transfer_table.IMAGE_SIZE}x"
            f"{transfer_table.IMAGE_SIZE} inputs, {epochs} epochs per fine-tune. Budget unit: the wall time of one"
            f" fixed-recipe fine-tune ({common.mean_std(unit)[0]:.0f} s here). `tune` searches learning rate,"
            " freezing policy, layer decay and augmentation (recipes/tune_space.yaml) on the validation split with"
            " the median pruner until its budget runs out (a started trial finishes, hence the time used); its score"
            " is the best trial's final weights. Test accuracy (%) on the fixed held-out split of digits 5-9, mean ±"
            f" std over {len(seeds)} seed(s).",
            common.md_table(["Arm", "Budget", "Trials", "Test accuracy (%)"], rows),
            f"{target}: **{common.verdict(ahead)}**.",
        ]
    )
    return {
        "accuracy": acc,
        "budget_used": used,
        "trials": trials,
        "unit_seconds": unit,
        "fixed_recipe": fixed_name,
        "config": {"shots": SHOTS, "epochs": epochs, "budgets": list(budgets), "seeds": list(seeds)},
        "targets": {target: ahead},
        "markdown": markdown,
    }
