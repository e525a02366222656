"""Cyclic learning on MoNuSeg, CPU-sized (`experiment=cyclic_cpu_monuseg`): one table, one row per loop.

    python benchmarks/cyclic_monuseg.py [--data-root ../shared/data] [--output logs/bench_cyclic] [--seeds 1,2,3]
                                        [--skip-train] [overrides]

Budget: CPU-sized experiment (3 loops of 400 classifier and 400 detector steps, 64 px tiles enlarged to 112 px,
the detector at native resolution), ResNet-18 trunk from random initialisation, 2 CPU cores.

Each seed runs `train.py experiment=cyclic_cpu_monuseg seed=<s> paths.data_dir=<data root>` with its logs under
`--output`, i.e. into the run folder `<output>/train/runs/cyclic_cpu_monuseg/image_label/seed<s>/`; rerunning the same
command reuses the finished stages (the pipeline resumes from its `done.json` files). `--skip-train` only prints
the table from the existing run folders. The data root defaults to $CELLSEG_TEST_DATA, else ../shared/data
beside the checkout. Extra arguments are Hydra overrides passed to train.py.

Columns, per loop n (stage summaries `<stage>_n/done.json`):
- tile acc.: the tile classifier's accuracy on the held-out tiles (classifier_n `held_out_accuracy`);
- pseudo: size of the pseudo set P_n (pseudo_n `instances`); change: 1 - object F1(P_n, P_{n-1}) (from loop 2);
- prec. / cover.: ORACLE diagnostic only, computed here: P_n (`pseudo_n/labels/<id>.png`, 65535 = ignore) against
  the TRAINING ground truth; precision = pseudo instances matching a GT nucleus at IoU > 0.5, coverage = GT
  nuclei matched (cellseg.metrics.pseudo_labels, pooled over images);
- AJI, AJI+, PQ, Dice, F1: test per-image means of detector n (evaluate_n `metrics`; blank if not evaluated);
- wall / CPU min: sum of the `profile` of the loop's stages (tiles_0 counted in loop 1, where it has one).
With several seeds each cell is mean ± sample sd over the seeds that have it. Numbers are truncated, never
rounded up. Targets: final AJI >= 0.55 and AJI(last loop) - AJI(loop 1) >= 0.02, per seed and on the mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
from _run import DEFAULT_DATA_ROOT, REPO_ROOT, run_train

from cellseg.metrics.pseudo_labels import pseudo_label_quality, summarise_quality
from cellseg.reporting.tables import text_table
from cellseg.utils.io import read_label, write_json

EXPERIMENT = "cyclic_cpu_monuseg"
LOOP_STAGES = ("classifier", "relevance", "pseudo", "detector", "selftrain", "evaluate")
TEST_METRICS = {"aji": "test/aji", "aji_plus": "test/aji_plus", "pq": "test/pq", "dice": "test/dice",
                "f1_obj": "test/f1_obj"}
# (title, row key, decimals): one table column each
COLUMNS = (("loop", "loop", 0), ("tile acc.", "tile_accuracy", 3), ("pseudo", "pseudo_instances", 0),
           ("prec.", "precision", 3), ("cover.", "coverage", 3), ("change", "change", 3), ("AJI", "aji", 4),
           ("AJI+", "aji_plus", 4), ("PQ", "pq", 4), ("Dice", "dice", 4), ("F1", "f1_obj", 4),
           ("wall min", "wall_min", 1), ("CPU min", "cpu_min", 1))
TARGET_AJI, TARGET_GAIN = 0.55, 0.02
ORACLE_NOTE = ("Tile labels are simulated from the training masks (supervision=image_label, stage tiles_0); the "
               "training ground truth is read by this script only for the diagnostic prec./cover. columns.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = Path(os.environ["CELLSEG_TEST_DATA"]) if os.environ.get("CELLSEG_TEST_DATA") else DEFAULT_DATA_ROOT
    parser.add_argument("--data-root", type=Path, default=default_root)
    parser.add_argument("--output", "--out", type=Path, default=REPO_ROOT / "logs" / "bench_cyclic",
                        help="log folder of the runs (one run folder per seed under it)")
    parser.add_argument("--seeds", type=parse_seeds, default=[1],
                        help="comma-separated seed values, one run each (default: 1)")
    parser.add_argument("--skip-train", action="store_true", help="only print the table from existing run folders")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    return parser.parse_args(argv)


def parse_seeds(text: str) -> list[int]:
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected distinct integers, e.g. 1,2,3")
    return seeds


def run_dir_of(output: Path, seed: int) -> Path:
    """The run folder of one seed (configs/train.yaml run_name: <log_dir>/train/runs/<experiment>/<budget>/seed<seed>)."""
    return output / "train" / "runs" / EXPERIMENT / "image_label" / f"seed{seed}"


# ----------------------------------------------------------------------------------------------- reading a run
def stage_summary(run_dir: Path, key: str) -> dict | None:
    """The summary of a finished stage (`<key>/done.json`), None when the stage has not finished."""
    path = run_dir / key / "done.json"
    return json.loads(path.read_text()).get("summary", {}) if path.is_file() else None


def loop_numbers(run_dir: Path) -> list[int]:
    """Loops with at least one finished stage."""
    loops = set()
    for name in LOOP_STAGES:
        for done in run_dir.glob(f"{name}_*/done.json"):
            suffix = done.parent.name.removeprefix(f"{name}_")
            if suffix.isdigit():
                loops.add(int(suffix))
    return sorted(loops)


def oracle_quality(labels_dir: Path, train_labels: Path) -> tuple[float | None, float | None]:
    """ORACLE (reporting only): pooled precision and coverage of a pseudo set against the training GT."""
    paths = sorted(labels_dir.glob("*.png"))
    if not paths or not all((train_labels / p.name).is_file() for p in paths):
        return None, None
    quality = summarise_quality(pseudo_label_quality(read_label(p), read_label(train_labels / p.name))
                                for p in paths)
    return finite(quality["precision"]), finite(quality["coverage"])


def finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def loop_row(run_dir: Path, n: int, train_labels: Path) -> dict:
    """One table row: what loop n of a run did (None where a stage or value is missing)."""
    summaries = {name: stage_summary(run_dir, f"{name}_{n}") for name in LOOP_STAGES}
    classifier, pseudo = summaries["classifier"] or {}, summaries["pseudo"] or {}
    row = {"loop": n, "tile_accuracy": finite(classifier.get("held_out_accuracy")),
           "pseudo_instances": pseudo.get("instances"), "change": finite(pseudo.get("change")),
           "precision": None, "coverage": None}
    if summaries["pseudo"] is not None:
        row["precision"], row["coverage"] = oracle_quality(run_dir / f"pseudo_{n}" / "labels", train_labels)
    metrics = (summaries["evaluate"] or {}).get("metrics", {})
    row.update({name: finite(metrics.get(key)) for name, key in TEST_METRICS.items()})
    profiles = [s.get("profile", {}) for s in summaries.values() if s is not None]
    if n == 1:
        profiles.append((stage_summary(run_dir, "tiles_0") or {}).get("profile", {}))
    for field, key in (("wall_s", "wall_min"), ("cpu_s", "cpu_min")):
        seconds = [p[field] for p in profiles if field in p]
        row[key] = sum(seconds) / 60 if seconds else None
    return row


def run_rows(run_dir: Path, train_labels: Path) -> list[dict]:
    return [loop_row(run_dir, n, train_labels) for n in loop_numbers(run_dir)]


# -------------------------------------------------------------------------------------------------- formatting
def truncate(value: float, decimals: int) -> str:
    """`value` with `decimals` digits, rounded towards -inf (never up; 1e-9 absorbs float noise such as 0.58 ->
    0.57999...)."""
    scale = 10**decimals
    return f"{math.floor(value * scale + 1e-9) / scale:.{decimals}f}"


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def cell(values: list, decimals: int, several: bool) -> str:
    """One cell: the value of a single seed, or mean ± sd over the seeds that have one ('' when none has)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return ""
    if not several:
        return truncate(present[0], decimals)
    mean, sd = mean_sd(present)
    text = truncate(mean, decimals + (1 if decimals == 0 else 0))
    text += f"±{truncate(sd, decimals + (1 if decimals == 0 else 0))}" if sd is not None else "±-"
    return text + (f" (n={len(present)})" if len(present) < len(values) else "")


def format_table(rows_by_seed: dict[int, list[dict]]) -> str:
    """One row per loop found in any seed's run folder; mean ± sample sd per cell with several seeds."""
    several = len(rows_by_seed) > 1
    loops = sorted({row["loop"] for rows in rows_by_seed.values() for row in rows})
    lookup = {(seed, row["loop"]): row for seed, rows in rows_by_seed.items() for row in rows}
    table = [[title for title, _, _ in COLUMNS]]
    for n in loops:
        per_seed = [lookup.get((seed, n), {}) for seed in rows_by_seed]
        line = [str(n)]
        for _, key, decimals in COLUMNS[1:]:
            line.append(cell([row.get(key) for row in per_seed], decimals, several))
        table.append(line)
    return text_table(table[0], table[1:])


# ------------------------------------------------------------------------------------------------------ targets
def aji_targets(rows: list[dict]) -> dict:
    """Final AJI (the last evaluated loop) and its gain over loop 1's AJI; None where a loop was not evaluated."""
    evaluated = [row for row in rows if row.get("aji") is not None]
    final = evaluated[-1] if evaluated else None
    first = next((row for row in rows if row["loop"] == 1), None)
    gain = None
    if final is not None and first is not None and first.get("aji") is not None and final["loop"] > 1:
        gain = final["aji"] - first["aji"]
    return {"final_loop": final["loop"] if final else None, "final_aji": final["aji"] if final else None,
            "gain": gain}


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "cannot check (not evaluated)"
    return "met" if value >= target else "NOT met"


def format_targets(rows_by_seed: dict[int, list[dict]]) -> str:
    lines = [f"targets: final AJI >= {TARGET_AJI}, AJI(last loop) - AJI(loop 1) >= {TARGET_GAIN} "
             "(values truncated, compared unrounded)"]
    results = {seed: aji_targets(rows) for seed, rows in rows_by_seed.items()}
    for seed, result in results.items():
        final, gain = result["final_aji"], result["gain"]
        lines.append(f"  seed {seed}: final AJI (loop {result['final_loop']}) "
                     f"{'-' if final is None else truncate(final, 4)}: {verdict(final, TARGET_AJI)}; "
                     f"gain {'-' if gain is None else truncate(gain, 4)}: {verdict(gain, TARGET_GAIN)}")
    if len(results) > 1:
        finals = [r["final_aji"] for r in results.values()]
        gains = [r["gain"] for r in results.values()]
        final = None if None in finals else float(np.mean(finals))
        gain = None if None in gains else float(np.mean(gains))
        lines.append(f"  mean of {len(results)} seeds: final AJI {'-' if final is None else truncate(final, 4)}: "
                     f"{verdict(final, TARGET_AJI)}; gain {'-' if gain is None else truncate(gain, 4)}: "
                     f"{verdict(gain, TARGET_GAIN)}")
    return "\n".join(lines)


def report(rows_by_seed: dict[int, list[dict]], run_dirs: dict[int, Path]) -> str:
    seeds = ", ".join(str(s) for s in rows_by_seed)
    header = f"Cyclic learning ({EXPERIMENT}) on MoNuSeg, seed{'s' if len(rows_by_seed) > 1 else ''} {seeds}"
    if len(rows_by_seed) > 1:
        header += f": mean ± sample sd over n={len(rows_by_seed)} seeds"
    incomplete = [s for s, d in run_dirs.items() if not (d / "loops.json").is_file()]
    lines = [header, *(f"  seed {s}: {d}" for s, d in run_dirs.items()), format_table(rows_by_seed),
             format_targets(rows_by_seed), ORACLE_NOTE]
    if incomplete:
        lines.append(f"run not finished (no loops.json) for seed(s) {', '.join(map(str, incomplete))}: "
                     "the last loop shown may not be the final one")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output, data_root = args.output.resolve(), args.data_root.resolve()
    train_labels = data_root / "MoNuSeg" / "train" / "labels"
    costs = {}
    if not args.skip_train:
        for seed in args.seeds:
            overrides = [f"experiment={EXPERIMENT}", f"paths.data_dir={data_root}", f"seed={seed}",
                         "extras.print_config=false", *args.overrides]
            costs[seed] = run_train(overrides, output)
    run_dirs = {seed: run_dir_of(output, seed) for seed in args.seeds}
    missing = [str(d) for d in run_dirs.values() if not d.is_dir()]
    if missing:
        raise SystemExit(f"no run folder: {', '.join(missing)}")
    if not train_labels.is_dir():
        print(f"warning: {train_labels} not found: the prec./cover. columns stay blank")
    rows_by_seed = {seed: run_rows(run_dir, train_labels) for seed, run_dir in run_dirs.items()}
    print()
    print(report(rows_by_seed, run_dirs))
    for seed, cost in costs.items():
        print(f"seed {seed}: this invocation's train.py wall {cost['wall_s'] / 60:.1f} min, CPU "
              f"{cost['cpu_s'] / 60:.1f} min (user+sys, all threads; reused stages cost nothing)")
    write_json(output / "cyclic_monuseg.json",
               {"seeds": args.seeds, "overrides": args.overrides, "costs": costs,
                "run_dirs": {s: str(d) for s, d in run_dirs.items()}, "rows": rows_by_seed,
                "targets": {s: aji_targets(rows) for s, rows in rows_by_seed.items()}})


if __name__ == "__main__":
    main()
