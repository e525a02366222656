"""run_stage under a 2-process gloo group: a per-image stage's body runs on rank 0 only, a collective one on every
rank; every rank ends with rank 0's summary, and a finished stage is skipped by all."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from cellseg.pipeline.distributed import run_stage
from cellseg.pipeline.stage import Stage


def body_recording_calls(calls_dir: Path):
    def body(stage: Stage) -> dict:
        (calls_dir / f"{stage.name}-rank{dist.get_rank()}").touch()
        return {"rank": dist.get_rank()}
    return body


def worker(rank: int, root: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        root_path = Path(root)
        body = body_recording_calls(root_path / "calls")
        summaries = {}
        for name, collective in (("per_image", False), ("training", True)):
            stage = Stage(name, 0, root_path / name, {"k": 1}, [])
            summaries[name] = run_stage(stage, body, collective=collective).summary
            summaries[name + "_again"] = run_stage(Stage(name, 0, root_path / name, {"k": 1}, []), body,
                                                   collective=collective).summary
        (root_path / f"summaries-rank{rank}.json").write_text(json.dumps(summaries))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_per_image_stage_runs_on_rank_zero_and_collective_stage_on_every_rank(tmp_path):
    (tmp_path / "calls").mkdir()
    mp.spawn(worker, args=(str(tmp_path), free_port()), nprocs=2, join=True)
    assert sorted(p.name for p in (tmp_path / "calls").iterdir()) == ["per_image-rank0", "training-rank0",
                                                                      "training-rank1"]
    for rank in (0, 1):
        summaries = json.loads((tmp_path / f"summaries-rank{rank}.json").read_text())
        assert summaries == {"per_image": {"rank": 0}, "per_image_again": {"rank": 0},
                             "training": {"rank": 0}, "training_again": {"rank": 0}}
