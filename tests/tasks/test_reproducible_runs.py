"""Same command, same seed -> identical checkpoints and metrics; a run killed mid-training (SIGKILL) and resumed
with the same command ends bit-identical to the uninterrupted run. For every method, through train.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from run_helpers import REPO_ROOT, assert_same, kill_at_step, metrics_of, run_train, training_state

sys.path.insert(0, str(REPO_ROOT / "tests" / "methods" / "coin"))
from coin_pipeline_synth import train_overrides  # noqa: E402

STEPS = ["trainer.max_steps=6", "callbacks.last_checkpoint.every_n_train_steps=2"]
# S2L: the pseudo-label loss and the EMA maps are in play from the second epoch (3 batches an epoch).
SINGLE_STAGE = {
    "supervised": ["debug=smoke", "method=supervised", "trainer.val_check_interval=3"],
    "s2l": ["debug=smoke", "method=s2l", "method.module.warmup_epochs=1", "method.module.ema_period=1"],
}
KILL_STEP = {"supervised": 5, "s2l": 5, "coin": 3}  # one step after a checkpoint, mid-epoch


def checkpoints_of(method: str, run: Path) -> dict[str, Path]:
    if method == "coin":
        return {stage: run / stage / "checkpoints" / "last.ckpt" for stage in ("train_1", "train_2")}
    return {"fit": run / "checkpoints" / "last.ckpt"}


class ReproducibleRuns:
    """The runs of one method; one class per method, so parallel test workers can take the methods apart."""

    method: str

    @pytest.fixture(scope="class")
    def folders(self, tmp_path_factory) -> dict[str, Path]:
        method, root = self.method, tmp_path_factory.mktemp(self.method)
        overrides = [*(train_overrides(root) if method == "coin" else SINGLE_STAGE[method]), *STEPS,
                     f"paths.cache_dir={root / 'cache'}"]
        folders = {name: root / name for name in ("first", "second", "killed")}
        run_train(*overrides, f"hydra.run.dir={folders['first']}")
        run_train(*overrides, f"hydra.run.dir={folders['second']}")
        kill_at_step(KILL_STEP[method], root / "paused", *overrides, f"hydra.run.dir={folders['killed']}")
        resume = [] if method == "coin" else ["ckpt_path=last"]  # pipeline stages resume by themselves
        run_train(*overrides, f"hydra.run.dir={folders['killed']}", *resume)
        return folders

    def test_same_command_and_seed_give_identical_checkpoints_and_metrics(self, folders):
        for stage, path in checkpoints_of(self.method, folders["first"]).items():
            second = checkpoints_of(self.method, folders["second"])[stage]
            assert_same(training_state(path), training_state(second), stage)
        assert metrics_of(folders["first"]) == metrics_of(folders["second"])

    def test_killed_and_resumed_run_equals_the_uninterrupted_one(self, folders):
        for stage, path in checkpoints_of(self.method, folders["first"]).items():
            resumed = checkpoints_of(self.method, folders["killed"])[stage]
            assert_same(training_state(path), training_state(resumed), stage)
        assert metrics_of(folders["first"]) == metrics_of(folders["killed"])


class TestSupervised(ReproducibleRuns):
    method = "supervised"


class TestS2L(ReproducibleRuns):
    method = "s2l"


class TestCoin(ReproducibleRuns):
    method = "coin"
