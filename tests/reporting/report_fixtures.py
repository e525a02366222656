"""Small fixture runs for the report tests: real run-folder files (metrics.json and per_image.csv from the
evaluation code, config_resolved.yaml, run_info.json with its record) over a shared synthetic test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from skimage.draw import disk

from cellseg.evaluation import evaluate_predictions
from cellseg.utils.io import read_label, write_image, write_json, write_label
from cellseg.utils.run_record import resources_used, run_record

IMAGES = ("img_a", "img_b", "img_c", "img_d", "img_e")
SIZE = 64


def make_test_set(root: Path) -> Path:
    """<root>/Synth/test/{images,labels}: five images of eight disks each; returns the labels folder."""
    rng = np.random.default_rng(0)
    for name in IMAGES:
        label = np.zeros((SIZE, SIZE), np.int32)
        for k in range(8):
            rr, cc = disk((rng.integers(8, SIZE - 8), rng.integers(8, SIZE - 8)), 5, shape=label.shape)
            label[rr, cc] = k + 1
        write_label(root / "Synth" / "test" / "labels" / f"{name}.png", label)
        write_image(root / "Synth" / "test" / "images" / f"{name}.png",
                    np.where(label[..., None] > 0, 90, 220).astype(np.uint8).repeat(3, axis=-1))
    return root / "Synth" / "test" / "labels"


def degraded(label: np.ndarray, drop: int, rng: np.random.Generator) -> np.ndarray:
    """The GT with `drop` instances removed and a random erosion of the others (a worse or better 'model')."""
    out = label.copy()
    ids = [i for i in np.unique(label) if i]
    for i in rng.choice(ids, size=min(drop, len(ids)), replace=False):
        out[out == i] = 0
    out[rng.random(out.shape) < 0.05] = 0
    return out


def config(method: str, kind: str, ratio: float | None, seed: int, data_root: Path) -> dict:
    budget = f"scribble{ratio}" if kind == "scribble" else kind
    supervision = {"kind": kind, "budget": budget, **({"ratio": ratio} if ratio is not None else {})}
    return {"experiment_name": f"{method}_synth", "seed": seed, "method": {"name": method},
            "data": {"name": "synth", "root": str(data_root), "dataset": "Synth", "test_split": "test"},
            "supervision": supervision, "model": {"arch": "unet", "encoder": "resnet18"},
            "trainer": {"max_steps": 10}}


def make_run(folder: Path, method: str, kind: str, ratio: float | None, seed: int, data_root: Path,
             drop: int) -> Path:
    """One finished run folder whose predictions drop `drop` nuclei per image (seeded by `seed`)."""
    gt_dir = data_root / "Synth" / "test" / "labels"
    rng = np.random.default_rng(seed * 100 + drop)
    pred_dir = folder / "predictions" / "test"
    for name in IMAGES:
        write_label(pred_dir / f"{name}.png", degraded(read_label(gt_dir / f"{name}.png"), drop, rng))
    cfg = OmegaConf.create(config(method, kind, ratio, seed, data_root))
    (folder / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg))
    write_json(folder / "run_info.json", {"status": "completed", "git_sha": "0123456789abcdef", "seed": seed,
                                          "command": ["train.py", f"seed={seed}"], "record": run_record(cfg),
                                          "resources": resources_used(None) | {"cpu_s": 60.0 * (drop + 1)}})
    evaluate_predictions(gt_dir, pred_dir, folder, progress=False)
    return folder


def make_runs(root: Path) -> dict[str, list[Path]]:
    """2 methods × 2 seeds × 2 budgets: supervised (full; seeds 1, 2 as one multirun) and s2l (scribble 0.1 and
    0.3, seeds 1, 2); returns group name -> run folders."""
    data_root = root / "data"
    make_test_set(data_root)
    logs, groups = root / "logs" / "train", {}
    for seed, job in ((1, 0), (2, 1)):
        folder = logs / "multiruns" / "supervised_synth" / "sweep1" / str(job)
        groups.setdefault("supervised · full · synth", []).append(
            make_run(folder, "supervised", "full", None, seed, data_root, drop=0))
    for ratio, drop in ((0.1, 4), (0.3, 2)):
        for seed in (1, 2):
            folder = logs / "runs" / "s2l_synth" / f"scribble{ratio}" / f"seed{seed}"
            groups.setdefault(f"s2l · scribble{ratio} · synth", []).append(
                make_run(folder, "s2l", "scribble", ratio, seed, data_root, drop=drop))
    return groups
