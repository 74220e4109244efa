"""Run the benchmark suite and write its tables and plots: ``python -m benchmarks.run [--quick] [--only a,b]``.

Every figure is measured in this run, side by side (interleaved repeats, medians); the markdown goes to
``<out>/results.md`` (included by the docs' benchmarks page) with a machine header, the raw figures to
``<out>/results.json``. ``--only`` reruns a subset and keeps the other benchmarks' latest results of the same
mode from ``results.json``. ``--merge a,b`` runs nothing: it takes the results, plots and included files of
folders written by earlier runs with ``--out`` (benchmarks run in parallel, one folder each) into ``<out>``, as
``--only`` would have. A full run without ``--only`` leaves out the held-out suites (:data:`HELD_OUT`, each run once
by name) and keeps their results; ``--skip a,b`` leaves those out of the run. Targets are printed as PASS/MISS; the
exit status does not depend on them. It is 1 when a benchmark raised: its error and traceback are on the page, and
the others still ran.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import common

BENCHMARKS = (
    "overhead",
    "frozen",
    "ddp_unfreeze",
    "feature_cache",
    "data_loading",
    "memory",
    "transforms",
    "transfer_table",
    "goyal",
    "smith",
    "swats",
    "lr_finder",
    "shift",
    "heldout",
    "heldout_b",
    "heldout_lr_finder",
    "heldout_b_lr_finder",
    "heldout_c",
    "heldout_c_lr_finder",
    "heldout_d",
    "heldout_d_lr_finder",
    "heldout_e_lr_finder",
    "heldout_e_probe_views",
    "across_suites",
    "weight_averaging",
    "canvases",
    "segmentation",
    "tune",
    "peers",
)

HELD_OUT = tuple(name for name in BENCHMARKS if name.startswith("heldout"))
"""The held-out suites: each is run once, by name (``--only heldout_c``), after the rule it checks is fixed. A full
run without ``--only`` leaves them out and keeps their published results, so that rerunning the suite never turns a
held-out result into one seen while tuning; ``--quick`` (no published figure) runs them as a smoke test."""


def _names(listed: str) -> list[str]:
    return [n.strip() for n in listed.split(",") if n.strip()]


def selected(only: str, quick: bool, skip: str = "") -> list[str]:
    """The benchmarks a run takes: those named in ``only``, else every one (less :data:`HELD_OUT` in a full run),
    less those named in ``skip``.

    Example:
        >>> selected("shift,heldout_c", quick=False)
        ['shift', 'heldout_c']
        >>> "heldout_c" in selected("", quick=False), "heldout_c" in selected("", quick=True)
        (False, True)
        >>> "shift" in selected("", quick=True, skip="shift,peers")
        False
    """
    names = _names(only) or (list(BENCHMARKS) if quick else [n for n in BENCHMARKS if n not in HELD_OUT])
    return [n for n in names if n not in _names(skip)]


def run_one(name: str, quick: bool, out: Path, earlier: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Import and run ``benchmarks.<name>``; an exception (in the import too) becomes an ``error`` entry.

    A benchmark whose ``run`` takes ``earlier`` (one that reads other benchmarks' results) gets ``earlier``: the
    results on the page, this run's so far first.
    """
    machine = common.machine_info()
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        kwargs: dict[str, Any] = {"quick": quick}
        parameters = inspect.signature(module.run).parameters
        if "out_dir" in parameters:
            kwargs["out_dir"] = str(out)
        if "earlier" in parameters:
            kwargs["earlier"] = earlier or {}
        result = module.run(**kwargs)
    except Exception as err:  # a broken benchmark is reported, the others still run
        result = {
            "error": f"{type(err).__name__}: {err}",
            "markdown": f"### {name}\n\n**ERROR**: `{type(err).__name__}: {err}`\n\n```\n{traceback.format_exc()}```",
            "targets": {},
        }
    result["seconds"] = time.perf_counter() - start
    result["machine"] = machine
    return result


def summary(results: dict[str, dict[str, Any]]) -> str:
    """One table of every target with PASS/MISS."""
    rows = []
    for name, result in results.items():
        if "error" in result:
            rows.append([name, "(benchmark failed)", "ERROR"])
        for target, ok in result.get("targets", {}).items():
            rows.append([name, target, common.verdict(bool(ok))])
    return common.md_table(["Benchmark", "Target", "Result"], rows)


def _kept_results(previous: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The benchmarks' results saved in ``previous`` (a ``results.json``) by runs of the same mode, else none."""
    if not previous.is_file():
        return {}
    saved = json.loads(previous.read_text())
    kept = saved.get("results", {})
    if saved.get("quick") != quick or not all("markdown" in r for r in kept.values()):
        return {}
    return kept


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer epochs and repeats")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default="docs/benchmarks", help="output folder for results.md, JSON and PNGs")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out of the run")
    parser.add_argument("--merge", default="", help="comma-separated folders of earlier --out runs to merge (no run)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = common.machine_info()
    results: dict[str, dict[str, Any]] = {}
    kept = _kept_results(out / "results.json", args.quick)  # the page's results before this run
    if args.merge:
        for folder in (Path(f.strip()) for f in args.merge.split(",") if f.strip()):
            results.update(_merged_folder(folder, out, args.quick, parser))
        names = list(results)
        total = sum(float(r.get("seconds", 0.0)) for r in results.values())
    else:
        names = selected(args.only, args.quick, args.skip)
        if not args.only and not args.quick:
            print(
                f"[benchmarks] leaving out the held-out suites ({', '.join(HELD_OUT)}): each is run once, by name"
                " (--only); their published results are kept",
                file=sys.stderr,
                flush=True,
            )
        unknown = [n for n in [*names, *_names(args.skip)] if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        start = time.perf_counter()
        for name in names:
            print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
            results[name] = run_one(name, args.quick, out, earlier={**kept, **results})
            print(results[name]["markdown"] + f"\n\n({name}: {results[name]['seconds']:.0f} s)\n", flush=True)
        total = time.perf_counter() - start
    failed = [n for n in names if "error" in results[n]] if not args.merge else []
    partial = bool(args.only or args.merge) or len(names) < len(BENCHMARKS)
    if partial and kept:  # keep the other benchmarks' latest results of the same mode
        merged = {**kept, **results}
        names = [n for n in BENCHMARKS if n in merged]
        results = merged
        total = sum(float(results[n].get("seconds", 0.0)) for n in names)
    mode = "quick mode (`--quick`: 1 seed, fewer epochs and repeats)" if args.quick else "full suite"
    parts = [
        "<!-- Generated by `python -m benchmarks.run`; do not edit by hand. -->",
        f"## Results ({mode})",
        common.header_markdown(info),
        f"Wall time: {total / 60:.1f} min (sum over the benchmarks shown; each one's machine is in the time table"
        " at the end). Timings are medians over interleaved"
        " repeats on a machine shared with other jobs (noisy: compare the ratios, which are measured side by"
        " side, rather than the absolute times); timing runs use one torch thread.",
        "### Targets",
        summary(results),
        *(results[name]["markdown"] for name in names),
        "### Time per benchmark",
        "Each benchmark's machine and when its run started (or, for results recorded before runs kept their own,"
        " when the page took them); a page merged from several runs names several, the header the one that wrote"
        " the page.",
        common.md_table(
            ["Benchmark", "Seconds", "Machine, run"],
            [[n, f"{results[n]['seconds']:.0f}", common.machine_cell(results[n].get("machine"))] for n in names],
        ),
    ]
    text = "\n\n".join(parts) + "\n"
    (out / "results.md").write_text(text)
    payload = {"machine": info, "quick": args.quick, "wall_seconds": total, "results": common.jsonable(results)}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(summary(results))
    print(f"\n[benchmarks] wrote {out / 'results.md'} ({total / 60:.1f} min)")
    if failed:
        print(f"[benchmarks] failed (their errors are on the page): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _merged_folder(folder: Path, out: Path, quick: bool, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The results of an earlier ``--out folder`` run, its other files (plots, included markdown) copied to ``out``."""
    saved_path = folder / "results.json"
    if not saved_path.is_file():
        parser.error(f"--merge: {saved_path} does not exist (run `python -m benchmarks.run --out {folder}` first)")
    saved = json.loads(saved_path.read_text())
    if bool(saved.get("quick")) != quick:
        parser.error(f"--merge: {folder} holds {'quick' if saved.get('quick') else 'full'} results; match --quick")
    if folder.resolve() != out.resolve():
        for path in folder.iterdir():
            if path.is_file() and path.suffix in (".png", ".md", ".csv") and path.name != "results.md":
                shutil.copy2(path, out / path.name)
    machine = saved.get("machine")  # the machine that wrote the folder: its run's, for results that lack their own
    return {
        name: {"machine": machine, **result} if machine else result
        for name, result in saved.get("results", {}).items()
        if name in BENCHMARKS
    }


if __name__ == "__main__":
    raise SystemExit(main())
