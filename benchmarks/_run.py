"""Shared helpers of the benchmark scripts: run a train.py job, time it, read its metrics."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


def run_train(overrides: list[str], log_dir: Path) -> dict:
    """Run `python train.py <overrides>` with logs under `log_dir`; returns wall and CPU seconds and the exit code."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), "CELLSEG_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, str(REPO_ROOT / "train.py"), *overrides, f"paths.log_dir={log_dir}"]
    print("$", " ".join(command), flush=True)
    code = subprocess.run(command, env=env).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        raise SystemExit(f"train.py failed with exit code {code}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def find_run_dir(log_dir: Path, experiment_name: str, seed: int | None = None) -> Path:
    """The run folder of an experiment (`<budget>/seed<seed>`): the given seed's, else the last one found."""
    pattern = "*/seed*" if seed is None else f"*/seed{seed}"
    runs = sorted((log_dir / "train" / "runs" / experiment_name).glob(pattern))
    if not runs:
        raise SystemExit(f"no run folder for {experiment_name}{'' if seed is None else f' seed {seed}'} under {log_dir}")
    return runs[-1]
