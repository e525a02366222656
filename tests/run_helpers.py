"""Helpers of the trustworthy-run tests: train.py subprocesses, killing one mid-training, comparing checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# Checkpoint entries that describe the training state. Left out: paths and hyper-parameters (they name the run
# folder) and Lightning's loop counters (a restarted epoch is counted as started twice; global_step and epoch say
# where training is).
STATE_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch", "raw_state_dict",
              "s2l_ema", "rng_states")


def train_command(*overrides: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), *overrides]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO_ROOT)])}


def run_train(*overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(*overrides), env=environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def kill_at_step(step: int, marker: Path, *overrides: str) -> None:
    """Start train.py, SIGKILL it when it reaches `step` (it waits there), mid-training and mid-epoch."""
    pause = ["+callbacks.pause._target_=pause_callback.PauseAtStep", f"+callbacks.pause.step={step}",
             f"+callbacks.pause.marker={marker}"]
    kill_when_marked(train_command(*overrides, *pause), marker)


def kill_when_marked(command: list[str], marker: Path) -> None:
    """Start `command`, SIGKILL it once it has written `marker` (it waits there after writing it)."""
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 900
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"{command[1]} ended before its pause: {process.stderr.read()[-4000:]}")
        assert time.monotonic() < deadline, f"{command[1]} never reached its pause"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def training_state(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return {key: checkpoint[key] for key in STATE_KEYS if key in checkpoint}


def assert_same(a, b, where: str = "checkpoint") -> None:
    """Recursive bitwise equality of nested dicts / lists / tensors / scalars."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def metrics_of(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {"per_image_mean": summary["per_image_mean"], "pooled": summary["pooled"]}
