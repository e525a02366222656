"""Finished runs found under folders, each read into a RunRecord (what it was, what it scored, per image).

A run folder is one that holds `metrics.json` beside `config_resolved.yaml` (single runs, multirun jobs, sweep
trials alike). Its description comes from run_info.json's `record`, or from the resolved config for runs written
before records existed. Stage folders of multi-stage methods (`evaluate_<n>/metrics.json`) become its stages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from cellseg.utils.run_record import ANNOTATION_ORDER, model_name, split_fingerprint

METRICS_JSON, PER_IMAGE_CSV, RUN_INFO, CONFIG = "metrics.json", "per_image.csv", "run_info.json", "config_resolved.yaml"
STAGE_FOLDER = re.compile(r"^evaluate_(\d+)$")


@dataclass
class RunRecord:
    path: Path
    experiment: str
    method: str
    dataset: str
    kind: str
    budget: str
    ratio: float | None
    model: str | None
    seed: int | None
    means: dict
    per_image: pd.DataFrame
    pred_dir: Path | None
    gt_dir: Path | None
    cpu_minutes: float | None = None
    wall_minutes: float | None = None
    command: list = field(default_factory=list)
    git_sha: str | None = None
    test_data: dict | None = None
    stages: dict = field(default_factory=dict)  # stage number -> per-image-mean metrics
    annotation: dict | None = None  # what its training images carried (cellseg/data/weak/amount.py)

    @property
    def group(self) -> tuple[str, str, str, str]:
        return self.dataset, self.kind, self.budget, self.method

    @property
    def annotation_rank(self) -> tuple[int, float]:
        """Order of annotation cost: none < image-level < scribbles by ratio < full masks."""
        order = ANNOTATION_ORDER.index(self.kind) if self.kind in ANNOTATION_ORDER else len(ANNOTATION_ORDER)
        return order, self.ratio or 0.0


def find_run_folders(roots: list[Path]) -> list[Path]:
    folders: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder of runs")
        candidates = [root / METRICS_JSON] if (root / METRICS_JSON).is_file() else root.rglob(METRICS_JSON)
        folders.update(p.parent for p in candidates if (p.parent / CONFIG).is_file())
    return sorted(folders)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable as JSON ({error})") from error


def describe(folder: Path) -> dict:
    """The run's record from run_info.json, completed from the resolved config where fields are missing."""
    info = read_json(folder / RUN_INFO) if (folder / RUN_INFO).is_file() else {}
    record = dict(info.get("record") or {})
    if not record:
        cfg = OmegaConf.load(folder / CONFIG)
        supervision = cfg.get("supervision") or {}
        root = Path(str(cfg.data.get("root", ""))) / str(cfg.data.get("dataset", ""))
        record = {"experiment": cfg.get("experiment_name"), "method": cfg.method.get("name"),
                  "dataset": cfg.data.get("name"), "model": model_name(cfg.get("model")), "seed": cfg.get("seed"),
                  "supervision": {"kind": supervision.get("kind"), "ratio": supervision.get("ratio"),
                                  "budget": supervision.get("budget")},
                  "test_data": split_fingerprint(root / str(cfg.data.get("test_split")))}
    resources = info.get("resources") or {}
    return {**record, "resources": resources, "command": info.get("command") or [], "git_sha": info.get("git_sha")}


def budget_name(supervision: dict) -> str:
    if supervision.get("budget"):
        return str(supervision["budget"])
    kind, ratio = supervision.get("kind"), supervision.get("ratio")
    return f"{kind}{ratio}" if ratio is not None else str(kind)


def read_stages(folder: Path) -> dict:
    stages = {}
    for child in folder.iterdir():
        match = STAGE_FOLDER.match(child.name)
        if match and (child / METRICS_JSON).is_file():
            stages[int(match.group(1))] = read_json(child / METRICS_JSON).get("per_image_mean", {})
    return dict(sorted(stages.items()))


def read_run(folder: Path) -> RunRecord:
    summary = read_json(folder / METRICS_JSON)
    if not (folder / PER_IMAGE_CSV).is_file():
        raise FileNotFoundError(f"{folder / PER_IMAGE_CSV} is missing beside metrics.json")
    record = describe(folder)
    supervision = record.get("supervision") or {}
    resources = record["resources"]

    def minutes(key: str) -> float | None:
        return None if resources.get(key) is None else resources[key] / 60

    return RunRecord(
        path=folder, experiment=str(record.get("experiment")), method=str(record.get("method")),
        dataset=str(record.get("dataset")), kind=str(supervision.get("kind")), budget=budget_name(supervision),
        ratio=supervision.get("ratio"), model=record.get("model"), seed=record.get("seed"),
        means=summary.get("per_image_mean", {}), per_image=pd.read_csv(folder / PER_IMAGE_CSV, dtype={"id": str}),
        pred_dir=Path(summary["pred_dir"]) if summary.get("pred_dir") else None,
        gt_dir=Path(summary["gt_dir"]) if summary.get("gt_dir") else None,
        cpu_minutes=minutes("cpu_s"), wall_minutes=minutes("wall_s"), command=record["command"],
        git_sha=record.get("git_sha"), test_data=record.get("test_data"), stages=read_stages(folder),
        annotation=record.get("annotation_used"))


def load_runs(roots: list[Path]) -> list[RunRecord]:
    folders = find_run_folders(roots)
    if not folders:
        raise FileNotFoundError(f"no finished run (metrics.json beside {CONFIG}) under {', '.join(map(str, roots))}")
    return [read_run(folder) for folder in folders]
