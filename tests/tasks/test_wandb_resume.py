"""A run resumed from its checkpoint continues the same (offline) W&B run."""

from __future__ import annotations

import torch
from test_cli import run

from cellseg.callbacks.wandb_run_id import CHECKPOINT_KEY, stored_run_id


def test_resume_continues_the_wandb_run_stored_in_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    common = ["debug=smoke", "logger=wandb", "test=false", f"hydra.run.dir={out}",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    first = run("train.py", *common, "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    (first_run,) = list((out / "wandb").glob("offline-run-*"))
    run_id = first_run.name.rsplit("-", 1)[1]
    assert stored_run_id(out / "checkpoints" / "last.ckpt") == run_id

    second = run("train.py", *common, "trainer.max_steps=4", "ckpt_path=last")
    assert second.returncode == 0, second.stderr[-3000:]
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[1] for r in runs} == {run_id}
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint[CHECKPOINT_KEY] == run_id


def test_checkpoints_without_wandb_carry_no_run_id(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    assert stored_run_id(path) is None and stored_run_id(None) is None
