"""Fully supervised U-Net on MoNuSeg (train 30, test 14) on the CPU; prints test AJI / PQ / Dice and the cost.

    python benchmarks/supervised_monuseg.py [--data-root ../shared/data] [--steps 2400] [--out logs/bench]

Configuration: `experiment=supervised_unet_monuseg` (smp U-Net, ResNet-18 encoder, random initialisation,
background / inside / boundary classes, CE + Dice, AdamW + warm-up cosine, 256 px crops, batch 8, last
checkpoint). Target: test AJI >= 0.60 within 60 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _run import DEFAULT_DATA_ROOT, REPO_ROOT, find_run_dir, read_metrics, run_train

from cellseg.reporting.tables import fmt, text_table

EXPERIMENT = "supervised_unet_monuseg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "logs" / "bench")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    overrides = [f"experiment={EXPERIMENT}", f"paths.data_dir={args.data_root.resolve()}", *args.overrides]
    if args.steps:
        overrides.append(f"trainer.max_steps={args.steps}")
    cost = run_train(overrides, args.out.resolve())
    summary = read_metrics(find_run_dir(args.out.resolve(), EXPERIMENT))
    mean, pooled = summary["per_image_mean"], summary["pooled"]
    print(f"\nsupervised U-Net on MoNuSeg test ({summary['n_images']} images)")
    names = ("aji", "aji_plus", "pq", "dice", "miou_bin")
    print(text_table(["metric", "per-image", "pooled"], [[n, fmt(mean[n], 4), fmt(pooled[n], 4)] for n in names]))
    print(f"wall {cost['wall_s'] / 60:.1f} min, CPU {cost['cpu_s'] / 60:.1f} min (user+sys, all threads)")


if __name__ == "__main__":
    main()
