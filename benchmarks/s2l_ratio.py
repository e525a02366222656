"""Scribble2Label by scribble ratio, next to pCE only and full supervision, on one dataset: one table.

    python benchmarks/s2l_ratio.py [--data dsb2018fluo|monuseg] [--data-root ../shared/data] [--epochs N]
                                   [--warmup-epochs N] [--quick] [--out logs/bench_s2l] [--seeds S ...]
                                   [--skip-existing] [--only-compared] [--oracle] [--test-only-from DIR]
                                   [extra Hydra overrides ...]

`--data dsb2018fluo` (default): every run is `experiment=s2l_unet_dsb2018fluo_cpu` (train: stage1_train
fluorescence, the first 160 images; test: stage1_test fluorescence, 53 images; each image's intensities stretched
between its 1st and 99.8th percentiles; small U-Net with a ResNet-18 encoder, random init; 128 px crops, batch 16,
2 crops per image and epoch, 30 epochs; last checkpoint):
  - S2L at supervision.ratio 0.1 / 0.3 / 0.5 / 1.0 (warm-up 10 epochs, EMA update after every epoch),
  - pCE only at 0.3 (method.module.pce_only=true: the scribble loss alone),
  - full supervision: method=supervised with 2 classes (CE + Dice on the full masks, its own AdamW schedule),
    the same network, data, epochs and instance decoding (the data's `instances`, as the S2L rows decode:
    a distance-transform watershed by default, `data.instances.method=cc` for the reference's components;
    < 64 px removed).
Cost on the shared 2-core CPU: 15-28 min per S2L run (30-55 s per epoch: 20 steps and an EMA update of 160 whole
images, depending on the machine), 6-12 min for pCE only and for full supervision: 1 h 20 min to 2 h 15 min.

`--data monuseg`: the S2L and pCE rows are `experiment=s2l_unet_monuseg_cpu` (MoNuSeg 30 train / 14 test H&E,
small U-Net, 256 px crops, batch 8, 20 epochs of 120 steps, instances by watershed); the full-supervision row is
the supervised U-Net baseline `experiment=supervised_unet_monuseg` (boundary class, its own decoding) given the
S2L runs' crops, batch and epochs, i.e. the same step budget. About an hour per run on 2 cores.

The runs the targets compare (S2L 30 %, pCE only 30 %, full supervision) are trained first.
`--seeds 42 7 13` trains every row once per seed (the scribbles stay those of supervision.seed) and prints the
means with the AJI sample sd and every seed's AJI: at this budget one seed moves AJI by a few hundredths.
`--oracle` adds `callbacks=s2l_pseudo_oracle` to the S2L rows: each EMA update's pseudo-label precision/recall
against the training masks lands in the run's pseudo_label_oracle.csv (a diagnostic; training is unchanged).
`--test-only-from DIR` trains nothing: each row and seed tests the last checkpoint of the same run under DIR (an
earlier --out) with today's settings; for changes that act only at test time, such as the instance decoding.
`--quick` shrinks everything (a few images, 2 epochs) to check the script end to end (a few minutes).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _run import DEFAULT_DATA_ROOT, REPO_ROOT, find_run_dir, read_metrics, run_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cellseg.reporting.tables import fmt, text_table

RATIOS = (0.1, 0.3, 0.5, 1.0)
QUICK = ["method.module.warmup_epochs=1", "method.module.ema_period=1"]
QUICK_EPOCHS = 2
COLUMNS = (("aji", "AJI"), ("pq", "PQ"), ("dice", "Dice"), ("miou_bin", "mIoU"))
PCE_30, FULL = "pCE only 30 %", "full supervision"


@dataclass(frozen=True)
class Dataset:
    """One table: the S2L experiment of its S2L/pCE rows and how its full-supervision row is trained."""

    experiment: str
    title: str
    quick_images: int
    run_prefix: str

    def s2l_config(self):
        return OmegaConf.load(REPO_ROOT / "configs" / "experiment" / f"{self.experiment}.yaml")

    def full_row(self, epochs: int | None, extra: list[str] = ()) -> list[str]:
        """Overrides of the full-supervision row; `epochs` (None: the experiment's) is set here, not by the caller."""
        epoch_override = [f"trainer.max_epochs={epochs}"] if epochs else []
        if self.experiment == DSB.experiment:
            # The same network and the S2L runs' instance decoding, so the table compares the semantic masks; the
            # experiment's S2L schedule keys are dropped (the supervised module has none).
            return [f"experiment={self.experiment}", "method=supervised", "method.module.num_classes=2",
                    "~method.module.warmup_epochs", "~method.module.ema_period", "method.selection=last",
                    *s2l_decoding(self.experiment, extra), *epoch_override]
        s2l = self.s2l_config()
        return ["experiment=supervised_unet_monuseg", f"data.crop={s2l.data.crop}",
                f"data.batch_size={s2l.data.batch_size}", f"data.crops_per_image={s2l.data.crops_per_image}",
                "trainer.max_steps=-1", f"trainer.max_epochs={epochs or s2l.trainer.max_epochs}"]


def s2l_decoding(experiment: str, extra: list[str]) -> list[str]:
    """`method.module.postproc` overrides that decode a 2-class supervised model as the S2L runs do (the data's
    `instances` and S2L's minimum area), read from the composed S2L configuration."""
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}", *extra])
    method = cfg.data.instances.method
    return [f"method.module.postproc.min_area={cfg.method.module.min_instance_area}",
            f"+method.module.postproc.method={method}",
            *(f"+method.module.postproc.{key}={value}" for key, value in cfg.data.instances[method].items())]


DSB = Dataset("s2l_unet_dsb2018fluo_cpu", "DSB2018 fluorescence (test: stage1_test fluorescence", 8, "s2l_ratio_")
DATASETS = {
    "dsb2018fluo": DSB,
    "monuseg": Dataset("s2l_unet_monuseg_cpu", "MoNuSeg H&E (test: MoNuSeg test", 4, "s2l_ratio_monuseg_"),
}


def s2l_label(ratio: float) -> str:
    return f"S2L {round(ratio * 100)} %"


COMPARED = (s2l_label(0.3), PCE_30, FULL)  # the rows the targets compare: trained first


def runs(dataset: Dataset, epochs: int | None, s2l_only: list[str], oracle: bool,
         extra: list[str] = ()) -> list[tuple[str, list[str]]]:
    """(label, overrides) of every row of the table; `s2l_only` goes to the S2L and pCE rows; `extra` (the user's
    overrides of every run) only informs the full row's decoding here."""
    s2l = [f"experiment={dataset.experiment}", *([f"trainer.max_epochs={epochs}"] if epochs else []), *s2l_only]
    rows = [(s2l_label(r), [*s2l, f"supervision.ratio={r}", *(["callbacks=s2l_pseudo_oracle"] if oracle else [])])
            for r in RATIOS]
    rows.append((PCE_30, [*s2l, "supervision.ratio=0.3", "method.module.pce_only=true"]))
    rows.append((FULL, dataset.full_row(epochs, list(extra))))
    return rows


def run_order(labels: list[str]) -> list[int]:
    """Indices of the rows in the order they are trained: the compared rows first."""
    return sorted(range(len(labels)), key=lambda i: (labels[i] not in COMPARED, i))


def run_name(label: str, prefix: str = DSB.run_prefix) -> str:
    return prefix + "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


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


def seed_folders(seed: int | None) -> str:
    """Glob of a row's run folders for one seed (<budget>/seed<seed>; None: any seed)."""
    return f"*/seed{'*' if seed is None else seed}"


def train_row(label: str, overrides: list[str], seed: int | None, args: argparse.Namespace,
              out: Path) -> tuple[dict, dict, Path]:
    """Train (or, with --skip-existing, reuse) one run of a row: its metrics, its cost and its folder."""
    name = run_name(label, DATASETS[args.data].run_prefix)
    folder = out / "train" / "runs" / name
    done = any(folder.glob(f"{seed_folders(seed)}/metrics.json"))
    if args.skip_existing and done:
        cost = {"wall_s": float("nan"), "cpu_s": float("nan")}
    else:
        seed_override = [] if seed is None else [f"seed={seed}"]
        test_only = [] if args.test_only_from is None else ["train=false", f"ckpt_path={source_checkpoint(args, name, seed)}"]
        cost = run_train([*overrides, *seed_override, f"experiment_name={name}", *test_only, *args.overrides], out)
    run_dir = find_run_dir(out, name, seed)
    return read_metrics(run_dir), cost, run_dir


def source_checkpoint(args: argparse.Namespace, name: str, seed: int | None) -> Path:
    """The last checkpoint of the same row and seed under --test-only-from (one run expected)."""
    found = sorted((args.test_only_from / "train" / "runs" / name).glob(f"{seed_folders(seed)}/checkpoints/last.ckpt"))
    if len(found) != 1:
        raise SystemExit(f"--test-only-from: expected one last.ckpt of {name} seed {seed} under {args.test_only_from}, "
                         f"found {len(found)}")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATASETS), default="dsb2018fluo")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs of every run")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="override method.module.warmup_epochs (S2L)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke check of the script")
    parser.add_argument("--out", type=Path, default=None,
                        help="log folder (default logs/bench_s2l[_monuseg][_quick])")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train every row once per seed and print means (and the AJI spread); "
                             "default: the experiment's seed only")
    parser.add_argument("--skip-existing", action="store_true", help="reuse runs that already wrote metrics.json")
    parser.add_argument("--only-compared", action="store_true",
                        help="train only the rows the targets compare (S2L 30 %%, pCE only 30 %%, full supervision)")
    parser.add_argument("--test-only-from", type=Path, default=None,
                        help="do not train: test the last checkpoint of each row and seed from this earlier --out "
                             "(for changes that touch only the test, e.g. the instance decoding)")
    parser.add_argument("--oracle", action="store_true",
                        help="S2L rows log their pseudo-labels' precision/recall against the training masks")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    dataset = DATASETS[args.data]
    default_out = "bench_s2l" + ("_monuseg" if args.data == "monuseg" else "") + ("_quick" if args.quick else "")
    out = (args.out or REPO_ROOT / "logs" / default_out).resolve()
    common = [f"paths.data_dir={args.data_root.resolve()}"]
    common += [f"data.max_images={dataset.quick_images}"] if args.quick else []
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else None)
    s2l_only = (QUICK if args.quick else []) + (
        [f"method.module.warmup_epochs={args.warmup_epochs}"] if args.warmup_epochs is not None else [])

    seeds = args.seeds or [None]  # None: the experiment's own seed
    rows = runs(dataset, epochs, s2l_only, args.oracle, args.overrides)
    if args.only_compared:
        rows = [row for row in rows if row[0] in COMPARED]
    results = [None] * len(rows)
    for index in run_order([label for label, _ in rows]):
        label, overrides = rows[index]
        runs_of_row = [train_row(label, [*common, *overrides], seed, args, out) for seed in seeds]
        results[index] = (label, runs_of_row)

    first_summary, _, first_run = results[0][1][0]  # an S2L row: its config gives the budget line
    print(f"\nScribble2Label on {dataset.title}, {first_summary['n_images']} images), per-image means"
          + (f", averaged over seeds {' '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
    print(budget_line(first_run))
    print(results_table(results, len(seeds) > 1))
    print(targets(results, seeds))
    print(f"runs under {out / 'train' / 'runs'}; CPU = user + sys of all threads"
          + (f"; test only (weights from {args.test_only_from}): minutes exclude training" if args.test_only_from else ""))


def aji_values(runs_of_row) -> list[float]:
    return [summary["per_image_mean"]["aji"] for summary, _, _ in runs_of_row]


def results_table(results, spread: bool) -> str:
    """Means over seeds per row; with several seeds, the AJI sample sd and each seed's AJI."""
    header = ["run", *(title for _, title in COLUMNS), *(["AJI sd", "AJI per seed"] if spread else []),
              "wall min", "CPU min"]
    cells = []
    for label, runs_of_row in results:
        means = {key: np.mean([summary["per_image_mean"][key] for summary, _, _ in runs_of_row]) for key, _ in COLUMNS}
        ajis = aji_values(runs_of_row)
        per_seed = [fmt(np.std(ajis, ddof=1), 4), " ".join(fmt(v, 4) for v in ajis)] if spread else []
        wall, cpu = (sum(cost[k] for _, cost, _ in runs_of_row) / 60 for k in ("wall_s", "cpu_s"))
        cells.append([label, *(fmt(means[key], 4) for key, _ in COLUMNS), *per_seed, fmt(wall, 1), fmt(cpu, 1)])
    return text_table(header, cells)


def targets(results, seeds: list[int | None]) -> str:
    """The S2L issue's two checks, on unrounded values: mean S2L 30 % >= 0.95 x mean full; S2L 30 % > pCE per seed."""
    aji = {label: aji_values(runs_of_row) for label, runs_of_row in results}
    s2l, pce, full = aji[s2l_label(0.3)], aji[PCE_30], aji[FULL]
    ratio = np.mean(s2l) / np.mean(full)
    wins = [a > b for a, b in zip(s2l, pce, strict=True)]
    names = ["default" if seed is None else str(seed) for seed in seeds]
    return (f"targets: S2L 30 % / full = {ratio:.3f} (>= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
            f"S2L 30 % > pCE only on seeds: "
            + ", ".join(f"{n} {'yes' if w else 'NO'}" for n, w in zip(names, wins, strict=True))
            + f" ({'met' if all(wins) else 'NOT met'})")


if __name__ == "__main__":
    main()
