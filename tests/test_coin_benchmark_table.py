"""benchmarks/coin_monuseg.py: the mean ± sd table over seeds and the COIN issue's targets, per seed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coin_monuseg import seed_summary, targets  # noqa: E402

from cellseg.reporting.tables import parse_text_table  # noqa: E402


def fake_rows(ucis: float, rounds: list[float]) -> list[dict]:
    rows = [{"stage": "initial instances (UCIS)", "aji": ucis, "pq": 0.4, "dice": 0.8, "miou_bin": 0.7},
            {"stage": "confident pseudo-labels P_0 (oracle)", "precision": 0.6, "coverage": 0.3}]
    return rows + [{"stage": f"self-distillation round {k}", "aji": a, "pq": 0.5, "dice": 0.8, "miou_bin": 0.7}
                   for k, a in enumerate(rounds, start=1)]


def test_seed_summary_gives_the_sample_sd_of_each_row_and_dashes_where_a_row_has_no_value():
    table = parse_text_table(seed_summary([fake_rows(0.55, [0.56, 0.60]), fake_rows(0.55, [0.58, 0.64])]))
    assert table[0][:2] == ["stage", "AJI"]
    rows = {row[0]: row for row in table[1:]}
    assert rows["initial instances (UCIS)"][1] == "0.550 ± 0.000"
    assert rows["self-distillation round 1"][1] == "0.570 ± 0.014"   # sd of (0.56, 0.58) = 0.01414
    assert rows["self-distillation round 2"][1] == "0.620 ± 0.028"
    assert rows["confident pseudo-labels P_0 (oracle)"][1] == "–" and rows["confident pseudo-labels P_0 (oracle)"][5] == "0.600 ± 0.000"


def test_targets_hold_only_when_every_round_rises_above_ucis_and_the_last_reaches_058():
    text = targets([fake_rows(0.55, [0.56, 0.58]), fake_rows(0.55, [0.60, 0.59]), fake_rows(0.57, [0.56, 0.59])],
                   ["1", "2", "3"])
    first, second, third = text.splitlines()
    assert "seed 1: final AJI 0.5800 (>= 0.58: met)" in first and "non-decreasing: yes" in first and "UCIS 0.5500: yes" in first
    assert "(>= 0.58: met)" in second and "non-decreasing: NO" in second
    assert "all > UCIS 0.5700: NO" in third
