"""Running a stage once per run, with or without DDP (docs/framework.md#multi-gpu-pipelines).

Under `trainer=ddp`, Lightning starts the other ranks at the first `fit` and they re-run the driver from the
start: the stages before that fit are already done (rank 0 finished them) and are skipped. From then on every
rank runs the driver in step, and `run_stage` decides who does what:

- a per-image stage (`collective=False`: UCIS, propagation, pseudo-labels ...) runs on rank 0 alone, spread
  over that rank's executor; the other ranks wait, then read its `done.json`;
- a training or prediction stage (`collective=True`) runs on every rank (DDP needs them all);
- only rank 0 creates, wipes, restores from the cache or finishes a stage folder.
Without an initialised process group (one process, or before the first DDP fit) it is the plain
completed → begin → body → finish sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist

from cellseg.pipeline.stage import Stage


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def run_stage(stage: Stage, body: Callable[[Stage], dict], collective: bool = False) -> Stage:
    """`stage` done: by a finished folder or cache entry, else by `body(stage)` (which returns the summary)."""
    if world_size() == 1:
        if not stage.completed():
            stage.begin()
            summary = body(stage)
            _finish(stage, summary)
        return stage
    leader = rank() == 0
    if leader and not stage.completed():  # may restore the folder from the cache: rank 0 only
        stage.begin()
    barrier()
    if stage.completed():
        return stage
    summary = body(stage) if collective or leader else None
    _finish(stage, summary)
    return stage


def _finish(stage: Stage, summary: dict | None) -> None:
    """Rank 0 writes done.json; the others wait for it and read the summary back (a body that started DDP, the
    first fit, leaves every rank in the process group)."""
    if world_size() == 1:
        stage.finish(summary)
        return
    barrier()  # every rank's files are written
    if rank() == 0:
        stage.finish(summary)
    barrier()
    if rank() != 0 and not stage.completed():
        raise RuntimeError(f"{stage.dir}: rank 0 did not finish stage {stage.key}")
