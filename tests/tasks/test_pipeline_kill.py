"""COIN killed by SIGKILL inside a per-image stage (round 1's pseudo labels, after its first image) and rerun with
the same command: every file of the run folder equals the uninterrupted run's (labels, prompts, scores, weights,
metrics)."""

from __future__ import annotations

import sys
from pathlib import Path

from run_helpers import HERE, REPO_ROOT, kill_when_marked, run_train

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "methods" / "coin"))
from coin_pipeline_synth import train_overrides  # noqa: E402
from compare_runs import compare_runs  # noqa: E402

N_TRAIN = 2
KILL_CALL = N_TRAIN + 2  # score_image_prompts calls: N_TRAIN in pseudo_0, then the 2nd image of pseudo_1


def kill_in_per_image_stage(marker: Path, *overrides: str) -> None:
    kill_when_marked([sys.executable, str(HERE / "pause_per_image.py"), str(KILL_CALL), str(marker), *overrides],
                     marker)


def test_coin_killed_inside_a_per_image_stage_resumes_to_identical_files(tmp_path):
    overrides = train_overrides(tmp_path, n_train=N_TRAIN, max_steps=2)
    first, killed = tmp_path / "first", tmp_path / "killed"
    run_train(*overrides, f"hydra.run.dir={first}")
    kill_in_per_image_stage(tmp_path / "paused", *overrides, f"hydra.run.dir={killed}")
    stage = killed / "pseudo_1"
    assert (stage / "stage.json").is_file() and not (stage / "done.json").exists()
    assert len(list((stage / "scores").glob("*.json"))) == KILL_CALL - N_TRAIN - 1  # killed mid-stage
    run_train(*overrides, f"hydra.run.dir={killed}")
    identical, differences = compare_runs(first, killed)
    assert differences == []
    assert identical > 0 and (killed / "metrics.json").is_file()
