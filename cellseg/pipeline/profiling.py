"""Wall time, CPU time and memory of a block of work, recorded into a stage's summary."""

from __future__ import annotations

import resource
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def profiled(record: dict, trace_memory: bool = False) -> Iterator[dict]:
    """Fill `record` with wall and CPU seconds, the process's peak RSS so far (MiB) and, with `trace_memory`,
    the tracemalloc peak of the block (MiB; numpy buffers included, torch tensors not)."""
    wall, cpu = time.perf_counter(), time.process_time()
    tracing = trace_memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    elif trace_memory:
        tracemalloc.reset_peak()
    try:
        yield record
    finally:
        record["wall_s"] = time.perf_counter() - wall
        record["cpu_s"] = time.process_time() - cpu
        record["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if trace_memory:
            record["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        if tracing:
            tracemalloc.stop()
