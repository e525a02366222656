"""Scribble2Label on DSB2018 fluorescence by scribble ratio, next to pCE only and full supervision: one table.

    python benchmarks/s2l_ratio.py [--data-root ../shared/data] [--epochs N] [--warmup-epochs N] [--quick]
                                   [--out logs/bench_s2l] [--seeds S ...] [--skip-existing]
                                   [extra Hydra overrides ...]

Every run is `experiment=s2l_unet_dsb2018fluo_cpu` (train: stage1_train fluorescence, the first 160 images;
test: stage1_test fluorescence, 53 images; each image's intensities stretched between its 1st and 99.8th
percentiles; small U-Net with a ResNet-18 encoder, random init; 128 px crops, batch 16, 2 crops per image and
epoch, 30 epochs; last checkpoint):
  - S2L at supervision.ratio 0.1 / 0.3 / 0.5 / 1.0 (warm-up 10 epochs, EMA update after every epoch),
  - pCE only at 0.3 (method.module.pce_only=true: the scribble loss alone),
  - full supervision: method=supervised with 2 classes (CE + Dice on the full masks, its own AdamW schedule),
    the same network, data, epochs and instance decoding (8-connected components, < 64 px removed).
The runs the targets compare (S2L 30 %, pCE only 30 %, full supervision) are trained first.
Cost on the shared 2-core CPU: 15-28 min per S2L run (30-55 s per epoch: 20 steps and an EMA update of 160 whole
images, depending on the machine), 6-12 min for pCE only and for full supervision: 1 h 20 min to 2 h 15 min.
`--seeds 42 7 13` trains every row once per seed (the scribbles stay those of supervision.seed) and prints the
means with the AJI spread: at this budget one seed moves AJI by a few hundredths.
`--quick` shrinks everything (8 images, 2 epochs) to check the script end to end (about 3 min).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _run import DEFAULT_DATA_ROOT, REPO_ROOT, find_run_dir, read_metrics, run_train
from omegaconf import OmegaConf

from cellseg.reporting.tables import fmt, text_table

EXPERIMENT = "s2l_unet_dsb2018fluo_cpu"
QUICK = ["data.max_images=8", "trainer.max_epochs=2", "method.module.warmup_epochs=1", "method.module.ema_period=1"]
# The supervised baseline decodes instances as S2L does, so the table compares the semantic masks.
SUPERVISED = ["method=supervised", "method.module.num_classes=2", "method.selection=last",
              "method.module.postproc.min_area=64", "+method.module.postproc.method=cc"]
COLUMNS = (("aji", "AJI"), ("pq", "PQ"), ("dice", "Dice"), ("miou_bin", "mIoU"))


PCE_30, FULL = "pCE only 30 %", "full supervision"


def s2l_label(ratio: float) -> str:
    return f"S2L {round(ratio * 100)} %"


COMPARED = (s2l_label(0.3), PCE_30, FULL)  # the rows the targets compare: trained first


def runs() -> list[tuple[str, list[str]]]:
    """(label, overrides) of every row of the table."""
    rows = [(s2l_label(r), [f"supervision.ratio={r}"]) for r in (0.1, 0.3, 0.5, 1.0)]
    rows.append((PCE_30, ["supervision.ratio=0.3", "method.module.pce_only=true"]))
    rows.append((FULL, SUPERVISED))
    return rows


def run_order(labels: list[str]) -> list[int]:
    """Indices of the rows in the order they are trained: the compared rows first."""
    return sorted(range(len(labels)), key=lambda i: (labels[i] not in COMPARED, i))


def run_name(label: str) -> str:
    return "s2l_ratio_" + "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


def budget_line(run_dir: Path) -> str:
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    schedule = cfg.method.module.scheduler
    stretch = cfg.data.get("stretch_percentiles")
    return (f"budget per run: {cfg.trainer.max_epochs} epochs x {cfg.data.max_images or 'all'} training images x "
            f"{cfg.data.crops_per_image} crops of {cfg.data.crop} px, batch {cfg.data.batch_size}, intensity stretch "
            f"{list(stretch) if stretch else 'off'}; model "
            f"{cfg.model.arch}/{cfg.model.encoder} (weights: {cfg.model.weights}); S2L warm-up "
            f"{cfg.method.module.get('warmup_epochs', '-')} epochs, EMA period {cfg.method.module.get('ema_period', '-')}, "
            f"lr cycles {schedule.get('cycles') or f'fixed (T_0 {schedule.T_0}, T_mult {schedule.T_mult})'}")


def train_row(label: str, overrides: list[str], seed: int | None, args: argparse.Namespace,
              out: Path) -> tuple[dict, dict, Path]:
    """Train (or, with --skip-existing, reuse) one run of a row: its metrics, its cost and its folder."""
    name = run_name(label)
    folder = out / "train" / "runs" / name
    done = any(folder.glob(f"*/seed{'*' if seed is None else seed}/metrics.json"))  # <budget>/seed<seed>
    if args.skip_existing and done:
        cost = {"wall_s": float("nan"), "cpu_s": float("nan")}
    else:
        seed_override = [] if seed is None else [f"seed={seed}"]
        cost = run_train([*overrides, *seed_override, f"experiment_name={name}", *args.overrides], out)
    run_dir = find_run_dir(out, name) if seed is None else next(folder.glob(f"*/seed{seed}"))
    return read_metrics(run_dir), cost, run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs of every run")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="override method.module.warmup_epochs (S2L)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke check of the script")
    parser.add_argument("--out", type=Path, default=None, help="log folder (default logs/bench_s2l[_quick])")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train every row once per seed and print means (and the AJI spread); "
                             "default: the experiment's seed only")
    parser.add_argument("--skip-existing", action="store_true", help="reuse runs that already wrote metrics.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    out = (args.out or REPO_ROOT / "logs" / ("bench_s2l_quick" if args.quick else "bench_s2l")).resolve()
    common = [f"experiment={EXPERIMENT}", f"paths.data_dir={args.data_root.resolve()}"]
    common += QUICK if args.quick else []
    common += [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    common += [f"method.module.warmup_epochs={args.warmup_epochs}"] if args.warmup_epochs is not None else []

    seeds = args.seeds or [None]  # None: the experiment's own seed
    rows = runs()
    results = [None] * len(rows)
    for index in run_order([label for label, _ in rows]):
        label, overrides = rows[index]
        runs_of_row = [train_row(label, [*common, *overrides], seed, args, out) for seed in seeds]
        results[index] = (label, runs_of_row)

    first_summary, _, first_run = results[0][1][0]
    print(f"\nScribble2Label on DSB2018 fluorescence (test: stage1_test fluorescence, "
          f"{first_summary['n_images']} images), per-image means"
          + (f", averaged over seeds {' '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
    print(budget_line(first_run))
    spread = len(seeds) > 1
    header = ["run", *(title for _, title in COLUMNS), *(["AJI sd"] if spread else []), "wall min", "CPU min"]
    cells = []
    for label, runs_of_row in results:
        means = {key: np.mean([summary["per_image_mean"][key] for summary, _, _ in runs_of_row]) for key, _ in COLUMNS}
        aji_sd = np.std([summary["per_image_mean"]["aji"] for summary, _, _ in runs_of_row], ddof=1) if spread else None
        wall, cpu = (sum(cost[k] for _, cost, _ in runs_of_row) / 60 for k in ("wall_s", "cpu_s"))
        cells.append([label, *(fmt(means[key], 4) for key, _ in COLUMNS), *([fmt(aji_sd, 4)] if spread else []),
                      fmt(wall, 1), fmt(cpu, 1)])
    print(text_table(header, cells))
    print(f"runs under {out / 'train' / 'runs'}; CPU = user + sys of all threads")


if __name__ == "__main__":
    main()
