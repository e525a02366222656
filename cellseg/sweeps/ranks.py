"""Multi-GPU trials: every rank of a worker runs the same trial; only rank 0 talks to the study.

A DDP trial is one job whose processes are started from outside, one per device: SLURM tasks
(`tasks_per_node = gpus_per_node = trainer.devices`, `nodes = trainer.num_nodes`) or `torchrun
--nproc_per_node=N`. Before the first trial the worker joins those processes in a process group (Lightning's
cluster environment gives rank, size and address; Lightning's DDP strategy then reuses the group). Rank 0 draws
the trial and broadcasts it; every rank trains; the objective is averaged over the ranks in one all-reduce, and
rank 0 reports it. Lightning's own launcher (one process that starts the others at `fit`) would re-run the
driver in each child, each drawing a trial of its own: it is refused.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from pytorch_lightning.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from cellseg.pipeline.checks import ConfigError
from cellseg.pipeline.distributed import world_size


def external_environment() -> ClusterEnvironment | None:
    """torchrun's or SLURM's environment when it started more than one process for this worker."""
    for environment_class in (TorchElasticEnvironment, SLURMEnvironment):
        if environment_class.detect():
            environment = environment_class()
            if environment.world_size() > 1:
                return environment
    return None


def join_ranks(cfg: DictConfig) -> None:
    """Form the process group of an externally started multi-process worker (no-op for one process)."""
    environment = external_environment()
    devices = cfg.trainer.get("devices", 1)
    expected = (devices if isinstance(devices, int) else 1) * int(cfg.trainer.get("num_nodes", 1))
    if environment is None:
        if expected > 1:
            raise ConfigError(
                f"trainer.devices={devices} x trainer.num_nodes={cfg.trainer.get('num_nodes', 1)} in a search "
                "worker that is one process: start one process per device (torchrun --nproc_per_node=N, or the "
                "SLURM launcher with tasks_per_node = gpus_per_node = trainer.devices); Lightning's own launcher "
                "would re-run the worker in every child and each would draw its own trial")
        return
    if environment.world_size() != expected:
        raise ConfigError(f"{environment.world_size()} processes were started for trainer.devices={devices} x "
                          f"trainer.num_nodes={cfg.trainer.get('num_nodes', 1)}: they must match")
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", environment.main_address)
    os.environ.setdefault("MASTER_PORT", str(environment.main_port))
    backend = "nccl" if torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu" else "gloo"
    dist.init_process_group(backend, rank=environment.global_rank(), world_size=environment.world_size(),
                            timeout=datetime.timedelta(hours=2))


def share_from_rank_zero(value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_objective(value: float | None, error: str | None) -> tuple[float | None, str | None]:
    """(mean objective over ranks, first error) in one collective; every rank returns the same pair."""
    if world_size() == 1:
        return value, error
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, (value, error))
    errors = [e for _, e in gathered if e is not None]
    if errors:
        return None, errors[0]
    return sum(v for v, _ in gathered) / len(gathered), None
