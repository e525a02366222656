"""A tiny two-round COIN run under 2-process gloo DDP: its per-image stages run once (rank 0), and its pseudo-labels
and test metrics equal what one process computes from the same inputs and weights.

- P_0 (before any training) equals a one-process run's P_0, file for file;
- round 1's train-split predictions and P_1 equal one process predicting with the DDP run's round-1 weights;
- the test metrics equal one process evaluating the DDP run's round-2 weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from run_helpers import REPO_ROOT, run_train

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "methods" / "coin"))
from coin_pipeline_synth import compose_coin, train_overrides  # noqa: E402
from compare_runs import compare_runs  # noqa: E402

from cellseg.pipeline.coin import CoinPipeline  # noqa: E402

UPSTREAM_OF_EVALUATION = ("ucis_0", "propagate_0", "pseudo_0", "train_1", "predict_1", "pseudo_1", "train_2")
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false", "logger=csv"]


def copy_stages(source: Path, target: Path, *keys: str) -> None:
    for key in keys:
        shutil.copytree(source / key, target / key)


def single_process(tmp_path: Path, overrides: list[str], run: str, inputs: Path | None = None,
                   stages: tuple[str, ...] = ()) -> CoinPipeline:
    """The same configuration in this process (one device), its run folder seeded with `stages` of `inputs`."""
    cfg = compose_coin(tmp_path, *[o for o in overrides if o != "method=coin"], tiny=False, run=run)
    if inputs is not None:
        copy_stages(inputs, Path(cfg.paths.output_dir), *stages)
    return CoinPipeline(cfg)


def test_coin_under_two_process_ddp_equals_one_process(tmp_path):
    # at least one test image per rank: Lightning's prediction sampler refuses a rank with none
    overrides = train_overrides(tmp_path, n_train=3, max_steps=2, n_test=2)
    ddp_run = tmp_path / "ddp"
    run_train(*overrides, *DDP, f"hydra.run.dir={ddp_run}", f"paths.cache_dir={tmp_path / 'cache'}")
    for key in ("ucis_0", "propagate_0", "pseudo_0", "pseudo_1"):  # per-image stages: computed once, by rank 0
        assert json.loads((ddp_run / key / "done.json").read_text())["stage"] == key.split("_")[0]

    alone = single_process(tmp_path, overrides, "p0")
    alone.pseudo_labels(0)
    for key in ("ucis_0", "propagate_0", "pseudo_0"):
        assert compare_runs(ddp_run / key, Path(alone.output_dir) / key)[1] == []

    round_1 = single_process(tmp_path, overrides, "p1", ddp_run, ("ucis_0", "propagate_0", "pseudo_0", "train_1"))
    round_1.pseudo_labels(1)  # train_1 is reused (same hash): predictions and P_1 from the DDP weights
    for key in ("predict_1", "pseudo_1"):
        identical, differences = compare_runs(ddp_run / key, Path(round_1.output_dir) / key)
        assert differences == [] and identical >= 3

    evaluation = single_process(tmp_path, overrides, "eval", ddp_run, UPSTREAM_OF_EVALUATION)
    ddp_metrics = json.loads((ddp_run / "evaluate_2" / "done.json").read_text())["summary"]["metrics"]
    assert ddp_metrics and evaluation.evaluate(2) == ddp_metrics
