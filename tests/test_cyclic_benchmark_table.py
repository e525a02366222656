"""benchmarks/cyclic_monuseg.py: the table of a hand-made run folder (rows, oracle precision/coverage, mean ± sd)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from cyclic_monuseg import format_table, main, report, run_dir_of, run_rows  # noqa: E402

from cellseg.reporting.tables import parse_text_table  # noqa: E402
from cellseg.utils.ignore import IGNORE_INSTANCE  # noqa: E402
from cellseg.utils.io import write_label  # noqa: E402


def box(top: int, left: int, height: int, width: int, value: int, out: np.ndarray) -> np.ndarray:
    out[top:top + height, left:left + width] = value
    return out


def gt_maps() -> dict[str, np.ndarray]:
    a = box(4, 4, 4, 4, 2, box(0, 0, 4, 4, 1, np.zeros((8, 8), np.uint16)))  # two 16 px nuclei
    b = box(2, 2, 4, 4, 1, np.zeros((8, 8), np.uint16))  # one 16 px nucleus
    return {"a": a, "b": b}


def pseudo_maps(loop: int) -> dict[str, np.ndarray]:
    if loop == 2:
        return gt_maps()  # every instance right: precision 1, coverage 1
    # loop 1: a = nucleus 1 exactly (match), a 4 px blob on background (no match), nucleus 2 ignored;
    # b = half of its nucleus (IoU exactly 0.5: not a match, IoU must exceed 0.5)
    a = box(4, 4, 4, 4, IGNORE_INSTANCE, box(4, 0, 2, 2, 2, box(0, 0, 4, 4, 1, np.zeros((8, 8), np.uint16))))
    b = box(2, 2, 2, 4, 1, np.zeros((8, 8), np.uint16))
    return {"a": a, "b": b}


def done(run_dir: Path, key: str, summary: dict) -> None:
    (run_dir / key).mkdir(parents=True, exist_ok=True)
    (run_dir / key / "done.json").write_text(json.dumps({"hash": "x", "summary": summary}))


def profile(minutes: float) -> dict:
    return {"profile": {"wall_s": 60.0 * minutes, "cpu_s": 120.0 * minutes, "max_rss_mib": 1.0}}


def make_run(run_dir: Path, aji: tuple[float, float]) -> Path:
    done(run_dir, "tiles_0", {"tiles": 10, **profile(1)})
    for n in (1, 2):
        done(run_dir, f"classifier_{n}", {"held_out_accuracy": 0.8 + 0.1 * (n - 1), **profile(2)})
        done(run_dir, f"relevance_{n}", profile(1))
        done(run_dir, f"pseudo_{n}", {"instances": 3, **({"change": 0.25} if n > 1 else {}), **profile(1)})
        for image_id, label in pseudo_maps(n).items():
            write_label(run_dir / f"pseudo_{n}" / "labels" / f"{image_id}.png", label)
        done(run_dir, f"detector_{n}", profile(3))
        done(run_dir, f"selftrain_{n}", {"detections": 4, **profile(1)})
        metrics = {f"test/{k}": v for k, v in {"aji": aji[n - 1], "aji_plus": aji[n - 1] + 0.01, "pq": 0.5,
                                                   "dice": 0.75, "f1_obj": 0.7}.items()}
        done(run_dir, f"evaluate_{n}", {"metrics": metrics, **profile(1)})
    done(run_dir, "classifier_3", {"held_out_accuracy": 0.95, "profile": {"wall_s": 30.0, "cpu_s": 60.0}})
    return run_dir


@pytest.fixture
def train_labels(tmp_path) -> Path:
    folder = tmp_path / "data" / "MoNuSeg" / "train" / "labels"
    for image_id, label in gt_maps().items():
        write_label(folder / f"{image_id}.png", label)
    return folder


def test_rows_and_oracle_numbers(tmp_path, train_labels):
    rows = run_rows(make_run(tmp_path / "run", (0.5, 0.53)), train_labels)
    assert [row["loop"] for row in rows] == [1, 2, 3]
    first, second, third = rows
    assert first["precision"] == pytest.approx(1 / 3) and first["coverage"] == pytest.approx(1 / 3)
    assert second["precision"] == 1.0 and second["coverage"] == 1.0
    assert first["change"] is None and second["change"] == 0.25
    assert first["wall_min"] == pytest.approx(10.0) and first["cpu_min"] == pytest.approx(20.0)  # tiles_0 in loop 1
    assert second["wall_min"] == pytest.approx(9.0)
    assert third["tile_accuracy"] == 0.95 and third["aji"] is None and third["precision"] is None
    assert third["wall_min"] == pytest.approx(0.5)
    table = parse_text_table(format_table({1: rows}))
    assert table[0][:2] == ["loop", "tile acc."]
    assert table[1] == ["1", "0.800", "3", "0.333", "0.333", "", "0.5000", "0.5100", "0.5000", "0.7500", "0.7000",
                        "10.0", "20.0"]
    assert table[2][:6] == ["2", "0.900", "3", "1.000", "1.000", "0.250"]
    assert [cell for cell in table[3] if cell] == ["3", "0.950", "0.5", "1.0"]
    text = report({1: rows}, {1: tmp_path / "run"})
    assert "final AJI (loop 2) 0.5300: NOT met; gain 0.0300: met" in text  # 0.53 < 0.55: not met
    assert "only for the diagnostic" in text


def test_several_seeds_mean_and_sample_sd(tmp_path, train_labels, capsys):
    output = tmp_path / "logs"
    make_run(run_dir_of(output, 1), (0.5, 0.56))
    make_run(run_dir_of(output, 2), (0.52, 0.60))
    (run_dir_of(output, 2) / "classifier_3").rename(run_dir_of(output, 2) / "skipped")
    main(["--skip-train", "--seeds", "1,2", "--output", str(output), "--data-root", str(tmp_path / "data")])
    text = capsys.readouterr().out
    print(text)
    lines = text.splitlines()
    assert "mean ± sample sd over n=2 seeds" in lines[1]
    row_2 = next(line for line in lines if line.startswith("| 2 "))
    # AJI loop 2: mean 0.58, sample sd 0.0283; pseudo instances 3 and 3: 3.0±0.0
    assert "0.5800±0.0282" in row_2 and "3.0±0.0" in row_2 and "1.000±0.000" in row_2
    row_3 = next(line for line in lines if line.startswith("| 3 "))
    assert "0.950±- (n=1)" in row_3
    assert "mean of 2 seeds: final AJI 0.5800: met; gain 0.0700: met" in text
    assert (output / "cyclic_monuseg.json").is_file()
