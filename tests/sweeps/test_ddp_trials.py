"""A DDP search worker (two gloo processes started by torchrun): rank 0 draws each trial, both ranks train it
with the same values, and the study receives one objective per trial."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
from run_helpers import REPO_ROOT, environment
from test_optuna_search import tiny

from cellseg.sweeps.report import load_study

DDP_ON_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]


def test_both_ranks_train_the_trial_rank_zero_drew_and_the_study_gets_one_objective(tmp_path):
    records = tmp_path / "ranks"
    overrides = [*tiny(tmp_path, 2), *DDP_ON_CPU, "hparams_search.worker=0",
                 "+callbacks.rank_record._target_=rank_record.RecordRank", f"+callbacks.rank_record.folder={records}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cellseg.sweeps.optuna_search", *overrides]
    result = subprocess.run(command, cwd=REPO_ROOT, env={**environment(), "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    trials = load_study(tmp_path / "sweeps" / "tiny", None, None).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    log = (tmp_path / "sweeps" / "tiny" / "workers" / "0" / "search.log").read_text()
    for trial in trials:
        ranks = [json.loads((records / f"trial_{trial.number:04d}_rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
        for record in ranks:
            assert record["lr"] == trial.params["method.module.optimizer.lr"]
            assert record["weight_decay"] == trial.params["method.module.optimizer.weight_decay"]
            assert record["global_step"] == 3
        assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]  # gradients were averaged: one model
        assert ranks[0]["weights_abs_sum"] == ranks[1]["weights_abs_sum"]
        drawn = re.findall(rf"rank (\d): trial {trial.number} with (.+)", log)
        assert sorted(r for r, _ in drawn) == ["0", "1"] and drawn[0][1] == drawn[1][1]
        told = re.findall(rf"rank (\d): trial {trial.number} objective (\S+)", log)
        assert sorted(r for r, _ in told) == ["0", "1"]
        assert {float(v) for _, v in told} == {trial.value}
    assert trials[0].params != trials[1].params
    assert not list((tmp_path / "sweeps" / "tiny").glob("trial_0002*"))  # no rank drew a trial of its own
