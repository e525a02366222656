"""`python -m cellseg.tasks.weak_labels`: build a scribble cache once, verify it, catch a tampered file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from cellseg.tasks.compose import compose_config
from cellseg.tasks.weak_labels import WeakLabelMismatch, prepare_weak_labels


def config(tmp_path: Path, *overrides: str):
    cfg = compose_config("weak_labels", ["data=sample", *overrides], tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def test_build_then_verify_then_detect_a_changed_file(tmp_path):
    assert prepare_weak_labels(config(tmp_path, "supervision=scribble")) == {"weak_labels/images": 6.0}
    files = sorted((tmp_path / "cache" / "weak_labels").rglob("*.png"))
    assert len(files) == 6
    assert prepare_weak_labels(config(tmp_path, "supervision=scribble", "verify=true")) == {
        "weak_labels/verified": 6.0}

    tampered = files[2]
    data = bytearray(tampered.read_bytes())
    data[-20] ^= 0xFF  # inside the compressed image data or its checksum: the bytes differ either way
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeakLabelMismatch, match=tampered.stem):
        prepare_weak_labels(config(tmp_path, "supervision=scribble", "verify=true"))


def test_verify_needs_generated_labels(tmp_path):
    with pytest.raises(ValueError, match="supervision=full has no generated cache"):
        prepare_weak_labels(config(tmp_path, "supervision=full", "verify=true"))


def test_command_line_exit_status(tmp_path):
    command = [sys.executable, "-m", "cellseg.tasks.weak_labels", "data=sample", "supervision=scribble",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    result = subprocess.run([*command, "verify=true"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "cache" / "weak_labels").rglob("*.png").__next__().unlink()
    result = subprocess.run([*command, "verify=true"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "differ from a fresh generation" in result.stderr
