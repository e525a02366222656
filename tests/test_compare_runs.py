"""benchmarks/compare_runs.py: identical runs compare equal; a changed weight, label or metric is found."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_runs import compare_runs  # noqa: E402


def make_run(root: Path, weight: float = 1.0, label: bytes = b"\x00\x01", aji: float = 0.5) -> Path:
    (root / "train_1" / "checkpoints").mkdir(parents=True)
    (root / ".hydra").mkdir()
    torch.save({"state_dict": {"w": torch.full((2,), weight)}, "epoch": 3},
               root / "train_1" / "checkpoints" / "last.ckpt")
    (root / "pseudo_0").mkdir()
    (root / "pseudo_0" / "img.png").write_bytes(label)
    (root / "metrics.json").write_text(json.dumps({"aji": aji, "pred_dir": str(root / "predictions")}))
    (root / "run_info.json").write_text(json.dumps({"started": str(root)}))  # differs between runs: skipped
    (root / ".hydra" / "config.yaml").write_text(f"dir: {root}\n")
    return root


def test_identical_runs_in_other_folders_compare_equal(tmp_path):
    identical, differences = compare_runs(make_run(tmp_path / "a"), make_run(tmp_path / "b"))
    assert (identical, differences) == (3, [])


def test_each_kind_of_difference_is_found(tmp_path):
    base = make_run(tmp_path / "a")
    for name, changed in {"weights": {"weight": 1.5}, "label": {"label": b"\x00\x02"}, "metric": {"aji": 0.6}}.items():
        _, differences = compare_runs(base, make_run(tmp_path / name, **changed))
        assert len(differences) == 1, name
    (tmp_path / "metric" / "extra.png").write_bytes(b"x")
    _, differences = compare_runs(base, tmp_path / "metric")
    assert any(d.startswith("only in") and d.endswith("extra.png") for d in differences)
