"""Stable hashes: seeds independent of Python's `hash`, file digests and config keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def stable_seed(*parts) -> int:
    """A 63-bit seed from any printable parts (global seed, image id, ratio ...), independent of run order."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(obj) -> str:
    """sha256 of a JSON-able object with sorted keys (dicts, lists, scalars, paths)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def short_hash(obj, length: int = 12) -> str:
    return config_hash(obj)[:length]


def as_path(path) -> Path:
    return Path(os.fspath(path))
