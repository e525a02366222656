"""Weak labels generated once from the training GT, seeded per image and cached under a content key.

Layout of the cache: `<cache_dir>/<name>/<key[:16]>/{<id><suffix>, meta.json}`. The key is a sha256 over the
generator name and version, its parameters (seed included) and the sha256 of every source label file, so a changed
parameter or label gives a new folder. `meta.json` is written last: a folder without it is incomplete and is
regenerated.
"""

from __future__ import annotations

import abc
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from cellseg.data.layout import SplitLayout
from cellseg.data.weak.base import WeakLabels
from cellseg.utils.hashing import config_hash, sha256_file, stable_seed
from cellseg.utils.io import read_label, write_json

log = logging.getLogger(__name__)

META_NAME = "meta.json"


class CachedWeakLabels(WeakLabels):
    """Base of generated weak labels (scribbles, ...): subclasses define the generator, this class the caching."""

    name: ClassVar[str]
    version: ClassVar[str]
    suffix: ClassVar[str] = ".png"
    reads_ground_truth: ClassVar[bool] = True

    def __init__(self, cache_dir: str | Path, seed: int = 0) -> None:
        if cache_dir is None or str(cache_dir) == "":
            raise ValueError(
                f"{type(self).__name__} needs a cache_dir (e.g. ${{paths.cache_dir}}/weak_labels)"
            )
        self.cache_dir = Path(cache_dir).expanduser()
        self.seed = int(seed)

    # --- what a generator defines -------------------------------------------------------------------------
    @abc.abstractmethod
    def params(self) -> dict:
        """Every parameter that changes the output (JSON-able); part of the cache key."""

    @abc.abstractmethod
    def generate(self, image_id: str, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The weak label of one image from its int32 instance map, drawing randomness only from `rng`."""

    @abc.abstractmethod
    def write(self, path: Path, array: np.ndarray) -> None:
        """Write one generated array (atomically)."""

    def sample_params(self) -> tuple:
        """Parameters that define the random sample besides seed, name and image id (e.g. the scribble ratio)."""
        return ()

    # --- seeding and keys -----------------------------------------------------------------------------------
    def image_rng(self, image_id: str) -> np.random.Generator:
        """One Generator per image from a stable hash, so outputs do not depend on processing order or workers."""
        return np.random.default_rng(stable_seed(self.seed, self.name, image_id, *self.sample_params()))

    def key_params(self) -> dict:
        return {**self.params(), "seed": self.seed}

    def cache_key(self, source_digests: dict[str, str]) -> str:
        return config_hash(
            {
                "name": self.name,
                "version": self.version,
                "params": self.key_params(),
                "sources": sorted([image_id, digest] for image_id, digest in source_digests.items()),
            }
        )

    def cache_folder(self, key: str) -> Path:
        return self.cache_dir / self.name / key[:16]

    # --- the public entry points ----------------------------------------------------------------------------
    def prepare(self, layout: SplitLayout, ids: Sequence[str]) -> dict[str, Path]:
        """Generate (or reuse) the weak label of every id; returns id -> file path in the order of `ids`."""
        ids = _checked_ids(ids)
        sources = {image_id: layout.label_path(image_id) for image_id in ids}
        digests = {image_id: sha256_file(path) for image_id, path in sources.items()}
        key = self.cache_key(digests)
        folder = self.cache_folder(key)
        outputs = {image_id: folder / f"{image_id}{self.suffix}" for image_id in ids}
        if _is_complete(folder, key, outputs):
            log.info("%s: reusing %d cached weak labels in %s", self.name, len(ids), folder)
            return outputs
        self._generate_all(sources, outputs, folder, key, digests)
        return outputs

    def verify(self, layout: SplitLayout, ids: Sequence[str]) -> list[str]:
        """Regenerate in memory and return the ids whose cached bytes differ (all ids if the cache is incomplete)."""
        ids = _checked_ids(ids)
        sources = {image_id: layout.label_path(image_id) for image_id in ids}
        key = self.cache_key({image_id: sha256_file(path) for image_id, path in sources.items()})
        folder = self.cache_folder(key)
        if _read_meta_key(folder) != key:
            return list(ids)
        differing = []
        with tempfile.TemporaryDirectory(prefix="verify_") as scratch:
            for image_id in tqdm(ids, desc=f"verify {self.name}", unit="image"):
                fresh = Path(scratch) / f"fresh{self.suffix}"
                self.write(
                    fresh, self.generate(image_id, read_label(sources[image_id]), self.image_rng(image_id))
                )
                cached = folder / f"{image_id}{self.suffix}"
                if not cached.is_file() or cached.read_bytes() != fresh.read_bytes():
                    differing.append(image_id)
        return differing

    # --- internals --------------------------------------------------------------------------------------------
    def _generate_all(
        self,
        sources: dict[str, Path],
        outputs: dict[str, Path],
        folder: Path,
        key: str,
        digests: dict[str, str],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # A stale meta.json must not vouch for files that are about to be rewritten.
        (folder / META_NAME).unlink(missing_ok=True)
        for image_id in tqdm(outputs, desc=f"{self.name} weak labels", unit="image"):
            label = read_label(sources[image_id])
            self.write(outputs[image_id], self.generate(image_id, label, self.image_rng(image_id)))
        meta = {
            "key": key,
            "name": self.name,
            "version": self.version,
            "params": self.key_params(),
            "ids": sorted(outputs),
            "sources_sha256": digests,
            "outputs_sha256": {image_id: sha256_file(path) for image_id, path in outputs.items()},
        }
        write_json(folder / META_NAME, meta)  # last: marks the folder complete
        log.info("%s: wrote %d weak labels to %s", self.name, len(outputs), folder)


def _checked_ids(ids: Sequence[str]) -> list[str]:
    ids = [str(image_id) for image_id in ids]
    if len(set(ids)) != len(ids):
        duplicates = sorted({image_id for image_id in ids if ids.count(image_id) > 1})
        raise ValueError(f"duplicate image ids passed to prepare(): {duplicates[:5]}")
    return ids


def _read_meta_key(folder: Path) -> str | None:
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable meta.json means an incomplete cache: regenerate


def _is_complete(folder: Path, key: str, outputs: dict[str, Path]) -> bool:
    return _read_meta_key(folder) == key and all(path.is_file() for path in outputs.values())
