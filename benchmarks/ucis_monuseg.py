"""COIN stage 0: the classical UCIS (docs/methods/coin.md#ucis) on the 14 MoNuSeg test images, against their labels.

Prints AJI, PQ and Dice per image (`cellseg.metrics.instance_metrics`), their mean over images and the seconds per
image (wall and CPU). Target (docs/methods/coin.md#results): AJI >= ~0.55, what a 12-line classical watershed reaches.
`--prompter` also times the classical prompter over the UCIS instances of each image (stage 2b budget).

    python benchmarks/ucis_monuseg.py [--data-root ../shared/data] [--peak-min-distance 4] [--prompter local_otsu]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cellseg.methods.coin.prompter import ClassicalPrompter, prompt_masks  # noqa: E402
from cellseg.methods.coin.ucis import classical_ucis  # noqa: E402
from cellseg.metrics import instance_metrics  # noqa: E402
from cellseg.utils.io import read_image, read_label, write_json  # noqa: E402

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METRICS = ("aji", "pq", "dice")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--stain", default="auto")
    parser.add_argument("--threshold", default="otsu")
    parser.add_argument("--min-area", type=int, default=30)
    parser.add_argument("--max-hole", type=int, default=100)
    parser.add_argument("--peak-min-distance", type=int, default=4)
    parser.add_argument("--prompter", default=None, help="also time ClassicalPrompter(method=...) per image")
    parser.add_argument("--out", type=Path, default=None, help="write the per-image rows and means as JSON")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    split_dir = args.data_root / "MoNuSeg" / args.split
    images = sorted((split_dir / "images").glob("*.png"))[: args.limit]
    if not images:
        raise SystemExit(f"no images under {split_dir / 'images'} (use --data-root)")
    ucis_kwargs = dict(stain=args.stain, threshold=args.threshold, min_area=args.min_area,
                       max_hole=args.max_hole, peak_min_distance=args.peak_min_distance)
    print(f"classical UCIS {ucis_kwargs} on {len(images)} MoNuSeg/{args.split} images")
    rows = [evaluate_image(path, ucis_kwargs, args.prompter) for path in images]
    summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "id"}
    print("mean over images: " + "  ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    if args.out:
        write_json(args.out, {"settings": ucis_kwargs, "prompter": args.prompter, "images": rows, "mean": summary})


def evaluate_image(path: Path, ucis_kwargs: dict, prompter_method: str | None) -> dict:
    image = read_image(path)
    label = read_label(path.parent.parent / "labels" / path.name)
    wall, cpu = time.perf_counter(), time.process_time()
    pred = classical_ucis(image, **ucis_kwargs)
    row = {"id": path.stem, "ucis_wall_s": time.perf_counter() - wall, "ucis_cpu_s": time.process_time() - cpu}
    values = instance_metrics(label, pred)
    row.update({key: float(values[key]) for key in METRICS})
    row["n_pred"], row["n_gt"] = int(len(np.unique(pred)) - 1), int(len(np.unique(label)) - 1)
    text = f"{path.stem}  " + "  ".join(f"{k} {row[k]:.4f}" for k in METRICS)
    text += f"  instances {row['n_pred']}/{row['n_gt']}  ucis {row['ucis_wall_s']:.2f} s"
    if prompter_method:
        prompter = ClassicalPrompter(method=prompter_method)
        wall, cpu = time.perf_counter(), time.process_time()
        prompt_masks(image, pred, prompter=prompter)
        row["prompter_wall_s"] = time.perf_counter() - wall
        row["prompter_cpu_ms_per_instance"] = 1000 * (time.process_time() - cpu) / max(row["n_pred"], 1)
        text += f"  prompter {row['prompter_wall_s']:.2f} s ({row['prompter_cpu_ms_per_instance']:.2f} ms/inst cpu)"
    print(text, flush=True)
    return row


if __name__ == "__main__":
    main()
