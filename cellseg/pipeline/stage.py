"""Stage folders of a multi-stage pipeline (docs/framework.md#pipeline-stages): `<output_dir>/<stage>_<t>/` with `done.json`.

A stage's hash covers its config node and its inputs' hashes. `done.json` (written last, atomically) marks a
finished stage: a rerun with the same hash skips it. `stage.json` (written first) marks a started one: a rerun
with the same hash keeps the per-image files already written (each written atomically), a different hash wipes
the folder. Cacheable stages (deterministic ones) are also copied to `<cache_dir>/<stage>_<t>/<hash>/` when
done and restored from there by any later run with the same hash.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from cellseg.utils.hashing import config_hash
from cellseg.utils.io import write_json

log = logging.getLogger(__name__)

DONE_FILE = "done.json"
STARTED_FILE = "stage.json"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Stage:
    """One stage folder; `hash` = config_hash({stage, round, config, inputs})."""

    name: str
    round: int
    dir: Path
    config: dict
    inputs: list[str]
    cache_root: Path | None = None
    summary: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}_{self.round}"

    @property
    def hash(self) -> str:
        return config_hash({"stage": self.name, "round": self.round, "config": self.config, "inputs": self.inputs})

    @property
    def cache_dir(self) -> Path | None:
        return self.cache_root / self.key / self.hash if self.cache_root is not None else None

    # ----- state ---------------------------------------------------------------------------------------------
    def completed(self) -> bool:
        """True when done.json holds this hash (restoring the folder from the cache when it has it)."""
        record = read_json(self.dir / DONE_FILE)
        if record is not None and record.get("hash") == self.hash:
            self.summary = record.get("summary", {})
            return True
        return self._restore_from_cache()

    def begin(self) -> None:
        """Keep the folder of an interrupted run of this same stage; otherwise start from an empty folder."""
        started = read_json(self.dir / STARTED_FILE)
        if started is not None and started.get("hash") == self.hash:
            log.info("%s: resuming (reusing the per-image outputs already written)", self.key)
            (self.dir / DONE_FILE).unlink(missing_ok=True)
            return
        if self.dir.exists():
            log.info("%s: configuration changed, recomputing", self.key)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        write_json(self.dir / STARTED_FILE, self._record())

    def finish(self, summary: dict | None = None) -> None:
        self.summary = dict(summary or {})
        write_json(self.dir / DONE_FILE, {**self._record(), "summary": self.summary, "finished": time.time()})
        if self.cache_dir is not None:
            self._store_in_cache()
        log.info("%s: done (%s)", self.key, self.dir)

    def _record(self) -> dict:
        return {"stage": self.name, "round": self.round, "hash": self.hash, "inputs": self.inputs,
                "config": self.config}

    # ----- cache -------------------------------------------------------------------------------------------
    def _restore_from_cache(self) -> bool:
        cached = self.cache_dir
        if cached is None or read_json(cached / DONE_FILE) is None:
            return False
        if self.dir.exists():
            shutil.rmtree(self.dir)
        shutil.copytree(cached, self.dir)
        self.summary = read_json(self.dir / DONE_FILE).get("summary", {})
        log.info("%s: restored from the cache %s", self.key, cached)
        return True

    def _store_in_cache(self) -> None:
        target = self.cache_dir
        if read_json(target / DONE_FILE) is not None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(self.dir, partial)
        try:
            partial.rename(target)
        except OSError:  # another run stored it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
