"""Lightning's ``EMAWeightAveraging`` on few-shot fine-tunes: what the average does to test accuracy, by ``decay``.

A report, not a rule: no default of lit_transfer depends on it (the package ships no averaging of its own, and
``docs/weight-averaging.md`` shows how to add Lightning's). Tasks: the development suite's two shifts
(:mod:`benchmarks.shift_tasks`, ``resnet10t``) and the fifth held-out suite's four (:mod:`benchmarks.heldout_e_tasks`:
a ResNet, a RegNet, a MobileNet and a ConvNeXt), each from a source trained here. One policy, ``auto``'s fallback
(the control row of every suite), its learning rate chosen per task by the mean validation accuracy over
:data:`SELECT_SEEDS` without averaging, as the held-out suites choose it; then every row at that same rate, so that
each comparison is "the same run, with the average added". Rows: no averaging, then ``EMAWeightAveraging`` with each
decay of :data:`DECAYS` (``0.999`` is Lightning's default). The test accuracy is that of the final weights, which
are the average where averaging is on; the difference to no averaging is paired over the same seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.heldout import QUICK, SOURCE_EPOCHS, WORKERS, fmt_paired, paired
from benchmarks.heldout_d import SELECT_SEEDS
from benchmarks.heldout_e_tasks import TASKS as HELDOUT_E
from benchmarks.shift import select_lrs, selection_seeds
from benchmarks.shift_tasks import FALLBACK, build, fine_tune_all, fit_and_score, policies, task_sources
from benchmarks.shift_tasks import TASKS as DEVELOPMENT

NAME = "weight_averaging"
SECTION_FILE = "weight_averaging_section.md"
DECAYS = (0.9, 0.99, 0.999)
"""The decays compared: an average over about 10, 100 and 1000 optimizer steps (0.999 is Lightning's default)."""
PLAIN = "no averaging"
EPOCHS, SHOTS = 8, 10
"""The held-out suites' epochs and shots per class."""
SEEDS = tuple(range(10))
TASKS = (*DEVELOPMENT, *HELDOUT_E)
QUICK_TASKS = ("output", "split2")


def row(decay: float | None) -> str:
    """A row's name: :data:`PLAIN`, or the decay's."""
    return PLAIN if decay is None else f"EMA decay {decay:g}"


def steps_per_run(task: Any, shots: int, epochs: int) -> int:
    """Optimizer steps of one fine-tune: the batch is ``min(16, training images)`` (as :func:`build` sets it).

    Example:
        >>> from benchmarks.shift_tasks import TASKS
        >>> steps_per_run(TASKS[0], shots=10, epochs=8)  # 50 images in batches of 16: 4 steps an epoch
        32
    """
    images = len(task.target_classes) * shots
    return math.ceil(images / min(16, images)) * epochs


def averaged_run(job: dict[str, Any]) -> tuple[float, list[str]]:
    """One fine-tune of :func:`benchmarks.shift_tasks.fine_tune`'s arguments, with ``EMAWeightAveraging(decay)``
    when ``job["decay"]`` is set; the accuracy of the final weights on ``job["split"]`` and the INFO lines."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    job = dict(job)
    decay = job.pop("decay")
    model, data = build(job["task"], job["spec"], job["weights"], shots=job["shots"], seed=job["seed"], lr=job["lr"])
    callbacks = [] if decay is None else [EMAWeightAveraging(decay=decay)]
    accuracy, lines, _ = fit_and_score(
        model,
        data,
        epochs=job["epochs"],
        split=job["split"],
        limit_eval_batches=job.get("limit_eval_batches"),
        callbacks=callbacks,
    )
    return accuracy, lines


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Choose each task's learning rate on validation, run every row on the test seeds, compare with no averaging."""
    common.set_threads(1)
    common.quiet()
    tasks = [t for t in TASKS if t.key in QUICK_TASKS] if quick else list(TASKS)
    epochs = QUICK["epochs"] if quick else EPOCHS
    shots = QUICK["shots"][0] if quick else SHOTS
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    source_epochs = QUICK["source_epochs"] if quick else SOURCE_EPOCHS
    sources = task_sources(tasks, source_epochs)
    weights = {key: str(path) for key, (path, _) in sources.items()}
    spec = policies(epochs)[0][FALLBACK]
    settings: dict[str, Any] = {"epochs": epochs, "limit_eval_batches": QUICK["eval_batches"] if quick else None}
    workers = 1 if quick else WORKERS
    select_seeds = selection_seeds(SELECT_SEEDS, quick)
    chosen, val_scores = select_lrs({FALLBACK: spec}, weights, select_seeds, quick, workers, tasks=tasks, **settings)

    decays: tuple[float | None, ...] = (None, *DECAYS)
    cells = [(task, seed, decay) for task in tasks for seed in seeds for decay in decays]
    jobs = [
        {"task": task, "spec": spec, "weights": weights[task.key], "shots": shots, "seed": seed, "decay": decay}
        | {"lr": chosen[task.key][FALLBACK], "split": "test", **settings}
        for task, seed, decay in cells
    ]
    accuracy: dict[str, dict[str, list[float]]] = {t.key: {row(d): [] for d in decays} for t in tasks}
    results = fine_tune_all(jobs, workers, "weight averaging test runs", runner=averaged_run)
    for (task, _, decay), (acc, _) in zip(cells, results):
        accuracy[task.key][row(decay)].append(acc)
    compared = {t.key: {row(d): paired(accuracy[t.key][row(d)], accuracy[t.key][PLAIN]) for d in DECAYS} for t in tasks}
    over_tasks = {row(d): statistics.fmean(compared[t.key][row(d)][0] for t in tasks) for d in DECAYS}
    result = common.jsonable(  # as results.json stores it, so that `report` reads a run and a stored result alike
        {
            "accuracy": accuracy,
            "paired": compared,
            "mean_over_tasks": over_tasks,
            "steps_per_run": {t.key: steps_per_run(t, shots, epochs) for t in tasks},
            "chosen_lr": {key: lrs[FALLBACK] for key, lrs in chosen.items()},
            "validation": val_scores,
            "sources": {key: meta for key, (_, meta) in sources.items()},
            "config": {
                "epochs": epochs,
                "shots": shots,
                "seeds": list(seeds),
                "select_seeds": list(select_seeds),
                "decays": list(DECAYS),
                "policy": FALLBACK,
            },
        }
    )
    markdown = report(result, quick)
    write_section(markdown, out_dir)
    return {**result, "targets": {}, "markdown": markdown}


def within_noise(diff: Any) -> bool:
    """Whether a paired difference ``(mean, standard error)`` is smaller than twice its standard error (or has
    none, with one seed).

    Example:
        >>> within_noise((-1.4, 0.4)), within_noise((0.5, 0.2)), within_noise((2.0, 1.6))
        (False, False, True)
        >>> within_noise((1.0, float("nan")))
        True
    """
    mean, error = float(diff[0]), float(diff[1])
    return math.isnan(error) or abs(mean) < 2 * error


def report(result: dict[str, Any], quick: bool) -> str:
    """The section's markdown from a result as :func:`run` returns and stores it: how it was run, one row per task
    (accuracy without averaging, then each decay's paired difference), the mean over the tasks, and which
    differences are within the seed noise.

    ``python -m benchmarks.weight_averaging`` renders the published result again (``docs/benchmarks``) after a
    change to this function, without training.
    """
    config, accuracy, paired_diffs = result["config"], result["accuracy"], result["paired"]
    keys, decays, seeds = list(accuracy), config["decays"], config["seeds"]
    backbone = {t.key: t.backbone for t in TASKS}
    lines = [
        [
            f"{key} (`{backbone[key]}`)",
            str(result["steps_per_run"][key]),
            f"{result['chosen_lr'][key]:g}",
            common.fmt_pm(accuracy[key][PLAIN]),
            *(fmt_paired(tuple(paired_diffs[key][row(d)])) for d in decays),
        ]
        for key in keys
    ]
    lines.append(["mean over the tasks", "", "", "", *(f"{result['mean_over_tasks'][row(d)]:+.1f}" for d in decays)])
    noisy = [f"{key}, decay {d:g}" for key in keys for d in decays if within_noise(paired_diffs[key][row(d)])]
    noise = (
        "Within the seed noise (a difference smaller than twice its paired standard error, or one seed): "
        + "; ".join(noisy)
        + "."
        if noisy
        else "Every difference is at least twice its paired standard error."
    )
    source_epochs = next(iter(result["sources"].values()))["epochs"]
    how = (
        "Quick mode (`--quick`): a smoke test of the code path (1-epoch sources, 2 target epochs, 1 shot per class,"
        " one seed, two tasks, a few evaluation batches); these figures are not the report."
        if quick
        else "A report of Lightning's callback on these tasks, run once; no setting of lit_transfer was chosen from it."
    )
    return "\n\n".join(
        [
            f"### Weight averaging (EMA) on few-shot fine-tunes {{#{NAME.replace('_', '-')}}}",
            how,
            f"The development suite's two shifts and the fifth held-out suite's four tasks at {config['shots']}"
            f" shot(s) per class, {config['epochs']} epochs, {config['policy']}, AdamW (weight decay 0.05), warmup +"
            f" cosine, label smoothing 0.1, the digit-safe augmentation, sources trained here ({source_epochs}"
            " epochs). The learning rate is chosen per task without averaging, by the mean validation accuracy over"
            f" seed(s) {', '.join(map(str, config['select_seeds']))}, and kept for every row. Test accuracy (%) of"
            " the final weights (the average, with `EMAWeightAveraging`), mean ± std over"
            f" {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); each decay's column is its mean paired"
            " difference to no averaging (points, same seeds) ± its paired standard error. The average spans about"
            " `1 / (1 - decay)` optimizer steps: compare it with each run's steps.",
            common.md_table(
                ["Task", "steps per run", "lr", PLAIN, *(f"decay {d:g} minus none" for d in decays)],
                lines,
            ),
            noise,
            f"The validation accuracy at every learning rate is in `results.json` (`{NAME}` > `validation`).",
        ]
    )


def write_section(markdown: str, out_dir: str | Path) -> None:
    """Write the section, without its heading (the including page has its own), to ``out_dir``."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    body = markdown.split("\n", 1)[1].lstrip()
    (Path(out_dir) / SECTION_FILE).write_text(common.generated_notice(NAME) + body + "\n")


def rerender(folder: str = "docs/benchmarks") -> None:
    """Render the result in ``folder``'s ``results.json`` again with :func:`report`: the section and the page."""
    from benchmarks import run  # the page writer; it imports every benchmark by name

    path = Path(folder) / "results.json"
    page = json.loads(path.read_text())
    result = page["results"][NAME]
    result["markdown"] = report(result, bool(page.get("quick")))
    write_section(result["markdown"], folder)
    path.write_text(json.dumps(page, indent=2) + "\n")
    run.main(["--merge", folder, "--out", folder, *(["--quick"] if page.get("quick") else [])])


if __name__ == "__main__":
    rerender(*sys.argv[1:])
