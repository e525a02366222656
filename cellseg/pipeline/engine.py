"""A multi-stage method as data (docs/framework.md#pipeline-stages): its kinds of stage (`StageSpec`) and the order
it runs them in (a plan: `(name, t)` pairs), run by one generic engine (`StageGraph`).

`StageGraph.get(name, t)` builds the stage `<name>_<t>` from its spec: first the stages it reads (recursively,
each once per run), then its `Stage` (folder, config node, input hashes), then `run_stage` (skipped when done,
resumed when started, restored from the cache when cacheable, rank 0 only for per-image stages under DDP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cellseg.pipeline.distributed import run_stage
from cellseg.pipeline.stage import Stage


def no_inputs(driver, t: int) -> list[tuple[str, int]]:
    return []


def never(t: int) -> bool:
    return False


def always(t: int) -> bool:
    return True


@dataclass(frozen=True)
class StageSpec:
    """A kind of stage of a method, each callable taking the method's driver first:

    - `config(driver, t) -> dict`: what the stage's outputs depend on (hashed with its inputs' hashes);
    - `body(driver, stage, inputs) -> dict`: computes the stage into `stage.dir`, returns its summary; `inputs`
      maps each input's name to its finished `Stage`;
    - `inputs(driver, t) -> [(name, t')]`: the stages it reads, in hash order;
    - `collective`: run by every DDP rank (training, prediction) instead of rank 0 alone (per-image work);
    - `cacheable(t)`: deterministic, so stored in and restored from the shared cache.
    """

    name: str
    config: Callable[..., dict]
    body: Callable[..., dict]
    inputs: Callable[..., list[tuple[str, int]]] = no_inputs
    collective: bool = False
    cacheable: Callable[[int], bool] = never


class StageGraph:
    """The stages of one run folder, built on demand from their specs."""

    def __init__(self, specs: Sequence[StageSpec], driver, output_dir: Path, cache_root: Path | None) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.driver, self.output_dir, self.cache_root = driver, Path(output_dir), cache_root
        self.stages: dict[str, Stage] = {}

    def get(self, name: str, t: int) -> Stage:
        """The finished stage `<name>_<t>` (its inputs first)."""
        key = f"{name}_{t}"
        if key in self.stages:
            return self.stages[key]
        if name not in self.specs:
            raise KeyError(f"no stage {name!r}; this pipeline has {sorted(self.specs)}")
        spec = self.specs[name]
        inputs = {input_name: self.get(input_name, input_t) for input_name, input_t in spec.inputs(self.driver, t)}
        stage = Stage(name, t, self.output_dir / key, spec.config(self.driver, t),
                      [s.hash for s in inputs.values()], self.cache_root if spec.cacheable(t) else None)
        run_stage(stage, lambda s: spec.body(self.driver, s, inputs), collective=spec.collective)
        self.stages[key] = stage
        return stage

    def run(self, plan: Iterable[tuple[str, int]]) -> list[Stage]:
        return [self.get(name, t) for name, t in plan]
