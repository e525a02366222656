"""COIN's per-image stages (UCIS, propagation, prompts and scores) give byte-identical files and summaries whether
they run in the driver, in 2 joblib worker processes or as a submitit job array (local cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from coin_pipeline_synth import compose_coin, make_dataset

from cellseg.pipeline.coin import CoinPipeline
from cellseg.pipeline.executors import LocalExecutor

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from compare_runs import compare_runs  # noqa: E402

PER_IMAGE_STAGES = ("ucis_0", "propagate_0", "pseudo_0")


def square(value: int) -> int:
    return value * value


def test_local_executor_returns_results_in_the_order_of_the_ids():
    assert LocalExecutor(n_jobs=2).map(square, [3, 1, 2, 5], "squares") == [9, 1, 4, 25]
    assert LocalExecutor(n_jobs=1).map(square, [3, 1], "squares") == [9, 1]


@pytest.mark.parametrize("n_jobs", [0, -2])
def test_local_executor_refuses_a_worker_count_that_means_nothing(n_jobs):
    with pytest.raises(ValueError, match="executor.n_jobs"):
        LocalExecutor(n_jobs=n_jobs)


def summaries(run: Path) -> dict:
    """Each stage's done.json summary without its timings."""
    out = {}
    for key in PER_IMAGE_STAGES:
        summary = json.loads((run / key / "done.json").read_text())["summary"]
        summary.pop("profile", None)
        out[key] = summary
    return out


def per_image_stages(tmp_path: Path, data_root: Path, run: str, *executor: str) -> Path:
    cfg = compose_coin(tmp_path, "method.rounds=0", "method.cache=false", *executor, data_root=data_root, run=run)
    CoinPipeline(cfg).pseudo_labels(0)
    return Path(cfg.paths.output_dir)


@pytest.mark.parametrize("executor", [
    ("executor.n_jobs=2",),
    ("executor=submitit_local", "executor.poll_s=0.2"),
], ids=["joblib_2_workers", "submitit_array"])
def test_per_image_stages_write_identical_files_in_worker_processes(tmp_path, executor):
    data_root = make_dataset(tmp_path / "data", n_train=3)
    serial = per_image_stages(tmp_path, data_root, "serial")
    parallel = per_image_stages(tmp_path, data_root, "parallel", *executor)
    identical, differences = compare_runs(serial, parallel)
    assert differences == []
    assert identical >= 3 * 5  # per image: U, S, instances, prompts, scores (+ labels)
    assert summaries(parallel) == summaries(serial)
