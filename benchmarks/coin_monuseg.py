"""COIN on MoNuSeg, CPU-sized (`experiment=coin_cpu_monuseg`): one table, one row per stage.

    python benchmarks/coin_monuseg.py [--data-root ../shared/data] [--out logs/bench_coin] [--quick]
                                      [--experiment coin_cpu_monuseg | coin_cpu_unet_monuseg] [--seeds S ...]
                                      [overrides]

The pipeline runs through `train.py` on the 30 training images WITHOUT their labels and is evaluated on the 14
test images. Rows:
- initial instances: the UCIS of the run's configuration applied to the test images;
- after propagation: S of the test images (train statistics and global foreground prototype, per-image
  background from their own UCIS map) -> the shared A4 watershed; with `method.refine.enabled=false` (the
  CPU experiment's setting) S = U > 0, so the row shows what the A4 watershed alone does to the UCIS mask;
- confident pseudo-labels (round t): ORACLE diagnostic only, after the run: precision (accepted instances
  matching a GT nucleus at IoU > 0.5) and coverage (GT nuclei matched) against the training labels;
- self-distillation round r: test metrics of the round's EMA network (evaluate_<r>/metrics.json).
Test columns are per-image means (AJI, PQ, Dice, binary mIoU). s/img and peak memory of the pseudo-labelling
stages are those of the training run (done.json profiles; tracemalloc peak, numpy included); the training
rows give the stage's wall minutes. `--quick`: 2 cropped train and test images, a few steps, to check it works.
`--seeds 1 2` runs the pipeline once per seed (`seed=<s>`: the training rounds' seeds; the classical stages do not
depend on it), prints each seed's table, then the mean ± sample sd of every row over the seeds and the issue's
targets (final AJI >= 0.58; every round >= the one before it and > the UCIS row, on every seed). Without it the
experiment's own seed runs. A seed whose stages are done is not recomputed (the pipeline skips finished stages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from _run import DEFAULT_DATA_ROOT, REPO_ROOT, find_run_dir, run_train
from omegaconf import OmegaConf

from cellseg.evaluation import evaluate_arrays
from cellseg.metrics.pseudo_labels import pseudo_label_quality, summarise_quality
from cellseg.pipeline.coin import build_coin_part, propagate_image, propagation_model
from cellseg.postproc.instances import binary_to_instances
from cellseg.reporting.tables import fmt, mean_pm_sd, text_table
from cellseg.utils.io import read_image, read_label, write_image, write_json, write_label

DEFAULT_EXPERIMENT = "coin_cpu_monuseg"
METRICS = ("aji", "pq", "dice", "miou_bin")
TARGET_AJI = 0.58  # the paper's MoNuSeg AJI (SAM and MAE weights)
QUICK = ["method.rounds=2", "method.train.max_steps=3", "method.train.crop=128", "method.train.batch_size=2",
         "method.train.repeat=2", "method.module.inference.hflip=false", "method.cache=false"]
QUICK_CROP = (300, 300, 256)  # top, left, size of the quick crops


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "logs" / "bench_coin")
    parser.add_argument("--quick", action="store_true", help="2 cropped images, tiny budget (a plumbing check)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help="a COIN experiment on MoNuSeg (default %(default)s; coin_cpu_unet_monuseg: "
                             "the boundary-class U-Net student)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one run per seed, then mean ± sd over them (default: the experiment's seed)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    return parser.parse_args()


def make_quick_data(data_root: Path, out: Path) -> tuple[Path, Path]:
    """Crops of 2 train and 2 test images; the train label crops go to a separate oracle folder."""
    root, oracle = out / "quick_data", out / "quick_oracle_train_labels"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(oracle, ignore_errors=True)
    top, left, size = QUICK_CROP
    for split in ("train", "test"):
        source = data_root / "MoNuSeg" / split
        for path in sorted((source / "images").glob("*.png"))[:2]:
            crop = (slice(top, top + size), slice(left, left + size))
            write_image(root / "MoNuSeg" / split / "images" / path.name, read_image(path)[crop])
            label_dir = root / "MoNuSeg" / split / "labels" if split == "test" else oracle
            write_label(label_dir / path.name, read_label(source / "labels" / path.name)[crop])
    return root, oracle


def test_metrics(pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    result = evaluate_arrays(pairs, progress=False)
    return {name: result.per_image_mean[name] for name in METRICS}


def diagnostic_rows(cfg, run_dir: Path, data_root: Path) -> list[dict]:
    """UCIS and propagation applied to the test images with the run's settings and propagation model."""
    test = data_root / "MoNuSeg" / "test"
    enabled = cfg.method.refine.enabled
    source, mu_fg = propagation_model(cfg, run_dir / "propagate_0") if enabled else (None, None)
    ucis_source = build_coin_part(cfg.method, "ucis")
    ucis_pairs, propagated_pairs, seconds = [], [], []
    for path in sorted((test / "images").glob("*.png")):
        image, gt = read_image(path), read_label(test / "labels" / path.name)
        ucis = ucis_source(image, path.stem)
        start = time.perf_counter()
        mask = propagate_image(source, mu_fg, cfg.method.refine, image, ucis) if enabled else ucis > 0
        seconds.append(time.perf_counter() - start)
        ucis_pairs.append((path.stem, gt, ucis))
        propagated_pairs.append((path.stem, gt, binary_to_instances(mask, **cfg.method.module.instances)))
    ucis_profile = stage_profile(run_dir, "ucis_0")
    propagation_profile = stage_profile(run_dir, "propagate_0")
    return [
        {"stage": "initial instances (UCIS)", **test_metrics(ucis_pairs), **ucis_profile},
        {"stage": "after propagation (S -> A4)" if enabled else "propagation off (U > 0 -> A4)", **test_metrics(propagated_pairs), **propagation_profile},
    ]


def stage_profile(run_dir: Path, key: str) -> dict:
    profile = json.loads((run_dir / key / "done.json").read_text())["summary"].get("profile", {})
    peak = profile.get("traced_peak_mib", profile.get("max_rss_mib"))
    return {"s_per_image": profile.get("wall_s_per_image"), "wall_min": profile.get("wall_s", 0) / 60,
            "peak_mib": peak}


def oracle_rows(run_dir: Path, train_labels: Path) -> list[dict]:
    """ORACLE (reporting only): pseudo labels of each round against the training ground truth."""
    rows = []
    for folder in sorted(run_dir.glob("pseudo_*"), key=lambda p: int(p.name.split("_")[1])):
        counts = [pseudo_label_quality(read_label(p), read_label(train_labels / p.name))
                  for p in sorted((folder / "labels").glob("*.png"))]
        quality = summarise_quality(counts)
        rows.append({"stage": f"confident pseudo-labels P_{folder.name.split('_')[1]} (oracle)",
                     "precision": quality["precision"], "coverage": quality["coverage"],
                     "accepted": quality["accepted"], **stage_profile(run_dir, folder.name)})
    return rows


def round_rows(run_dir: Path) -> list[dict]:
    rows = []
    for folder in sorted(run_dir.glob("evaluate_*"), key=lambda p: int(p.name.split("_")[1])):
        round_ = folder.name.split("_")[1]
        mean = json.loads((folder / "metrics.json").read_text())["per_image_mean"]
        train = stage_profile(run_dir, f"train_{round_}")
        rows.append({"stage": f"self-distillation round {round_}", **{m: mean[m] for m in METRICS},
                     "s_per_image": stage_profile(run_dir, folder.name)["s_per_image"], "wall_min": train["wall_min"]})
    return rows


def format_rows(rows: list[dict]) -> str:
    columns = [("AJI", "aji"), ("PQ", "pq"), ("Dice", "dice"), ("mIoU", "miou_bin"), ("prec.", "precision"),
               ("cover.", "coverage"), ("s/img", "s_per_image"), ("min", "wall_min"), ("peak MiB", "peak_mib")]
    cells = [[row["stage"], *(fmt(row.get(key), 1 if key == "peak_mib" else 3) for _, key in columns)] for row in rows]
    return text_table(["stage", *(title for title, _ in columns)], cells)


def run_seed(args, data_root: Path, train_labels: Path, out: Path, seed: int | None) -> tuple[list[dict], dict, Path, int]:
    """One pipeline run (the experiment's seed when `seed` is None): its rows, cost, run folder and seed."""
    overrides = [f"experiment={args.experiment}", f"paths.data_dir={data_root}", "method.profile_memory=true",
                 "extras.print_config=false", *(QUICK if args.quick else []), *args.overrides,
                 *([] if seed is None else [f"seed={seed}"])]
    cost = run_train(overrides, out)
    run_dir = find_run_dir(out, args.experiment, seed)
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    rows = diagnostic_rows(cfg, run_dir, data_root) + oracle_rows(run_dir, train_labels) + round_rows(run_dir)
    return rows, {**cost, "overrides": overrides}, run_dir, int(cfg.seed)


def seed_summary(per_seed: list[list[dict]]) -> str:
    """Every row's mean ± sample sd over the seeds (rows matched by stage name)."""
    keys = [*METRICS, "precision", "coverage"]
    cells = []
    for rows in zip(*per_seed, strict=True):
        summary = {}
        for key in keys:
            values = [row[key] for row in rows if row.get(key) is not None]
            summary[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
            summary[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        cells.append([rows[0]["stage"], *(mean_pm_sd(summary, key) for key in keys)])
    return text_table(["stage", "AJI", "PQ", "Dice", "mIoU", "prec.", "cover."], cells)


def targets(per_seed: list[list[dict]], names: list[str]) -> str:
    """The COIN issue's checks on unrounded values, per seed: final AJI >= 0.58, each round >= the previous one
    and > the UCIS row."""
    lines = []
    for name, rows in zip(names, per_seed, strict=True):
        ucis = rows[0]["aji"]
        rounds = [row["aji"] for row in rows if row["stage"].startswith("self-distillation")]
        if not rounds:
            lines.append(f"seed {name}: no self-distillation round")
            continue
        final = rounds[-1] >= TARGET_AJI
        rising = all(b >= a for a, b in zip(rounds, rounds[1:], strict=False))
        above = all(aji > ucis for aji in rounds)
        lines.append(f"seed {name}: final AJI {rounds[-1]:.4f} (>= {TARGET_AJI}: {'met' if final else 'NOT met'}); "
                     f"rounds {' -> '.join(f'{a:.4f}' for a in rounds)} non-decreasing: {'yes' if rising else 'NO'}; "
                     f"all > UCIS {ucis:.4f}: {'yes' if above else 'NO'}")
    return "targets: " + "\n         ".join(lines)


def main() -> None:
    args = parse_args()
    out = args.out.resolve()
    data_root, train_labels = args.data_root.resolve(), args.data_root.resolve() / "MoNuSeg" / "train" / "labels"
    if args.quick:
        data_root, train_labels = make_quick_data(data_root, out)
    seeds = args.seeds or [None]
    n_train = len(list((data_root / "MoNuSeg" / "train" / "images").glob("*.png")))
    n_test = len(list((data_root / "MoNuSeg" / "test" / "images").glob("*.png")))
    results = [run_seed(args, data_root, train_labels, out, seed) for seed in seeds]
    names = [str(seed) for *_, seed in results]
    for name, (rows, cost, run_dir, _) in zip(names, results, strict=True):
        print(f"\nCOIN ({args.experiment}{', quick' if args.quick else ''}) on MoNuSeg, seed {name}: {n_train} train "
              f"images (no labels), {n_test} test images; run folder {run_dir}")
        print(format_rows(rows))
        print(f"total wall {cost['wall_s'] / 60:.1f} min, CPU {cost['cpu_s'] / 60:.1f} min (user+sys, all threads)")
    per_seed = [rows for rows, *_ in results]
    if len(seeds) > 1:
        print(f"\nmean ± sample sd over seeds {' '.join(names)}")
        print(seed_summary(per_seed))
    print(targets(per_seed, names))
    write_json(out / ("coin_monuseg_quick.json" if args.quick else "coin_monuseg.json"),
               {"runs": [{"seed": seed, "rows": rows, "cost": cost, "run_dir": str(run_dir)}
                         for rows, cost, run_dir, seed in results]})


if __name__ == "__main__":
    main()
