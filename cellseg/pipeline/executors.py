"""How a per-image stage runs its images: in this process, in worker processes (joblib), or as a job array (submitit).

A per-image task is a picklable callable `task(image_id) -> result` (a module-level function bound with
`functools.partial`) that writes its own files atomically and returns a small picklable result; `map` returns the
results in the order of the ids, so a stage gives the same files and the same summary whatever executor runs it.
The executor is not part of a stage's hash: it changes where the work runs, not what it computes.

Under DDP, per-image stages run on rank 0 only (`cellseg.pipeline.distributed.run_stage`), the executor
spreading them over that rank's workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def progress(items, desc: str, total: int | None = None):
    return tqdm(items, desc=desc, total=total, unit="image", leave=False)


class LocalExecutor:
    """`n_jobs: 1` runs the tasks here, one after another; `n_jobs > 1` (or -1: all cores) in joblib's worker
    processes (loky), each task once. `threads_per_worker` caps the BLAS/OpenMP threads of each worker (null:
    joblib's default, cores / workers)."""

    def __init__(self, n_jobs: int = 1, threads_per_worker: int | None = None) -> None:
        if n_jobs == 0 or n_jobs < -1:
            raise ValueError(f"executor.n_jobs={n_jobs}; expected a positive number of worker processes or -1 (all cores)")
        self.n_jobs = int(n_jobs)
        self.threads_per_worker = threads_per_worker

    def map(self, task: Callable, ids: Sequence[str], desc: str) -> list:
        if self.n_jobs == 1 or len(ids) <= 1:
            return [task(image_id) for image_id in progress(ids, desc)]
        from joblib import Parallel, delayed, parallel_config

        with parallel_config(backend="loky", inner_max_num_threads=self.threads_per_worker):
            results = Parallel(n_jobs=self.n_jobs, return_as="generator")(delayed(task)(i) for i in ids)
            return list(progress(results, desc, total=len(ids)))


class SubmititExecutor:
    """One job array per stage through submitit: `cluster: slurm` on a SLURM cluster (partition, time, memory
    ... as keyword `parameters` of `AutoExecutor.update_parameters`), `local` for subprocesses on this machine,
    `debug` in this process. Jobs write their logs under `folder`; the driver waits for the whole array and
    raises the first failure with its job log."""

    def __init__(self, folder: str, cluster: str | None = None, parameters: dict | None = None,
                 array_parallelism: int = 64, poll_s: float = 5.0) -> None:
        self.folder = Path(folder)
        self.cluster = cluster
        self.parameters = dict(parameters or {})
        self.array_parallelism = int(array_parallelism)
        self.poll_s = float(poll_s)

    def map(self, task: Callable, ids: Sequence[str], desc: str) -> list:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        parameters = {"name": desc.replace(" ", "_"), **self.parameters}
        if executor.cluster == "slurm":
            parameters.setdefault("slurm_array_parallelism", self.array_parallelism)
        executor.update_parameters(**parameters)
        jobs = executor.map_array(task, list(ids))
        log.info("%s: %d jobs submitted (%s, logs in %s)", desc, len(jobs), executor.cluster, self.folder)
        with progress(None, desc, total=len(jobs)) as bar:
            while (done := sum(job.done() for job in jobs)) < len(jobs):
                if done > bar.n:
                    bar.update(done - bar.n)
                time.sleep(self.poll_s)
            bar.update(len(jobs) - bar.n)
        return [job.result() for job in jobs]
