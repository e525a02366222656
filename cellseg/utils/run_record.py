"""What a run was, in run_info.json's `record`: method, data, annotation budget, model, seed, step budget, the
test split's fingerprint, and, once it ends, its wall time, CPU time and peak memory. Reports group runs by it."""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Supervision kinds from the cheapest annotation to the dearest (the report's x axis).
ANNOTATION_ORDER = ("annotation_free", "image_label", "scribble", "full")


def split_fingerprint(folder: Path) -> dict | None:
    """sha256 over the sorted relative paths and sizes of a split's files: two runs scored the same test data
    exactly when their fingerprints agree (cheap: no file is read)."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}\n".encode())
    return {"files": len(files), "sha256": digest.hexdigest()[:16]}


def model_name(model: DictConfig | None) -> str | None:
    """`arch/encoder` of a segmentation model; the sub-models' names of a composite one (Cyclic)."""
    if model is None:
        return None
    if model.get("arch"):
        return "/".join(str(v) for v in (model.arch, model.get("encoder")) if v)
    parts = [f"{key}:{model_name(node)}" for key, node in model.items() if isinstance(node, DictConfig)
             and (node.get("arch") or node.get("_target_"))]
    return ", ".join(parts) or str(model.get("_target_"))


def step_budget(cfg: DictConfig) -> dict:
    """The trainer's budget and any step counts the method declares for its stages."""
    trainer = cfg.get("trainer") or {}
    budget = {k: trainer.get(k) for k in ("max_steps", "max_epochs") if trainer.get(k) not in (None, -1)}
    method = cfg.get("method") or {}
    for stage in ("train", "classifier", "detector"):
        node = method.get(stage)
        if isinstance(node, DictConfig) and node.get("max_steps", node.get("steps")) is not None:
            budget[f"{stage}_steps"] = node.get("max_steps", node.get("steps"))
    for key in ("rounds", "loops"):
        if method.get(key) is not None:
            budget[key] = method.get(key)
    return budget


def run_record(cfg: DictConfig) -> dict:
    data, supervision = cfg.get("data") or {}, cfg.get("supervision") or {}
    test_split = data.get("test_split")
    root = Path(str(data.get("root", ""))) / str(data.get("dataset", ""))
    return {
        "experiment": cfg.get("experiment_name"),
        "method": (cfg.get("method") or {}).get("name"),
        "dataset": data.get("name"),
        "test_split": test_split,
        "test_data": split_fingerprint(root / str(test_split)) if test_split else None,
        "supervision": {"kind": supervision.get("kind"), "budget": supervision.get("budget"),
                        "ratio": supervision.get("ratio")},
        "model": model_name(cfg.get("model")),
        "seed": cfg.get("seed"),
        "steps": OmegaConf.to_container(OmegaConf.create(step_budget(cfg))),
    }


def resources_used(started: float | None) -> dict:
    """Wall seconds since `started`, CPU seconds (user + system, this process and its finished children) and
    peak resident memory (the larger of the two, MiB)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return {"wall_s": None if started is None else time.time() - started, "cpu_s": cpu,
            "peak_rss_mib": max(own.ru_maxrss, children.ru_maxrss) / 1024}
