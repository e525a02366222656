"""Test-wide settings: offline, W&B disabled, no network except loopback, real data from ../shared/data, and
the working tree left as it was (each test runs in its own temporary working directory)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("CELLSEG_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# caches of weak labels and COIN stages go to a temporary folder, not <repo>/.cache (inherited by subprocesses)
os.environ.setdefault("CELLSEG_CACHE_DIR", tempfile.mkdtemp(prefix="cellseg-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CELLSEG_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
SAMPLE_DATA = REPO_ROOT / "data" / "sample"


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: refuse


# Written by Python and pytest themselves, not by the code under test.
TOOL_DEBRIS = ("__pycache__", ".pytest_cache", ".ruff_cache")
_TREE_KEY = pytest.StashKey[set[str] | None]()
_WROTE_KEY = pytest.StashKey[str]()


def _working_tree_entries() -> set[str] | None:
    """`git status` of the checkout, ignored files included (None outside a git checkout)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line for line in status.stdout.splitlines() if not any(d in line for d in TOOL_DEBRIS)}


def pytest_sessionstart(session) -> None:
    session.config.stash[_TREE_KEY] = _working_tree_entries()


def pytest_sessionfinish(session, exitstatus) -> None:
    before, after = session.config.stash.get(_TREE_KEY, None), _working_tree_entries()
    if before is None or after is None or after <= before:
        return
    session.config.stash[_WROTE_KEY] = f"tests wrote into the working tree {REPO_ROOT}: {sorted(after - before)}"
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    # printed just above the final counts, so that the tail of a CI log shows why a green-looking run failed
    message = terminalreporter.config.stash.get(_WROTE_KEY, None)
    if message:
        terminalreporter.write_line(message, red=True)


@pytest.fixture(autouse=True)
def _temporary_working_directory(tmp_path, monkeypatch):
    """Code that writes relative to the working directory (a bare Trainer's default_root_dir) writes here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch):
    """Tests never reach the network; loopback stays open for DDP (gloo) rendezvous."""
    original = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise RuntimeError(f"tests must not use the network (tried to connect to {address})")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (expected ../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE_DATA
