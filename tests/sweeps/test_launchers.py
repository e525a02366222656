"""The shipped launcher configs: a grid through submitit's local executor lands in one sweep folder, and the
same sweep started again continues each job from its own last.ckpt (what a requeued SLURM job does)."""

from __future__ import annotations

import json
import subprocess

import torch
from run_helpers import REPO_ROOT, environment, train_command

GRID = ["-m", "hydra/launcher=submitit_local", "experiment=supervised_unet_sample", "debug=smoke",
        "data.val_holdout=1", "trainer.val_check_interval=2", "seed=1,2"]


def run_grid(tmp_path, max_steps: int) -> subprocess.CompletedProcess:
    command = train_command(*GRID, f"trainer.max_steps={max_steps}", f"paths.log_dir={tmp_path}",
                            f"paths.cache_dir={tmp_path / 'cache'}")
    result = subprocess.run(command, cwd=REPO_ROOT, env={**environment(), "CELLSEG_SWEEP_ID": "grid"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_a_two_job_grid_lands_in_one_sweep_folder_and_a_restarted_sweep_resumes_its_jobs(tmp_path):
    run_grid(tmp_path, 2)
    sweep = tmp_path / "debug" / "multiruns" / "supervised_unet_sample" / "grid"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    seeds = set()
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["n_images"] == 3 and 0.0 <= metrics["per_image_mean"]["aji"] <= 1.0
        seeds.add(json.loads((sweep / job / "run_info.json").read_text())["seed"])
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert seeds == {1, 2}
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran under submitit

    run_grid(tmp_path, 4)
    for job in jobs:
        log = (sweep / job / "debug.log").read_text()
        assert "resuming (ckpt_path=last)" in log
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
