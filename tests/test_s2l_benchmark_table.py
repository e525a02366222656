"""benchmarks/s2l_ratio.py: rows per dataset (same budget for the full row), table over seeds, the two targets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from s2l_ratio import COMPARED, DATASETS, FULL, PCE_30, results_table, runs, s2l_label, targets  # noqa: E402

from cellseg.reporting.tables import parse_text_table  # noqa: E402


def fake_runs(ajis: list[float]) -> list[tuple[dict, dict, Path]]:
    return [({"per_image_mean": {"aji": a, "pq": a / 2, "dice": 0.8, "miou_bin": 0.7}}, {"wall_s": 60.0, "cpu_s": 120.0},
             Path("run")) for a in ajis]


def test_monuseg_full_row_gets_the_s2l_runs_crops_batch_and_epochs():
    s2l = DATASETS["monuseg"].s2l_config()
    rows = dict(runs(DATASETS["monuseg"], None, [], oracle=False))
    full = rows[FULL]
    assert "experiment=supervised_unet_monuseg" in full and "trainer.max_steps=-1" in full
    for key, value in (("data.crop", s2l.data.crop), ("data.batch_size", s2l.data.batch_size),
                       ("data.crops_per_image", s2l.data.crops_per_image), ("trainer.max_epochs", s2l.trainer.max_epochs)):
        assert f"{key}={value}" in full
    assert dict(runs(DATASETS["monuseg"], 3, [], oracle=False))[FULL][-1] == "trainer.max_epochs=3"


def test_oracle_and_s2l_only_overrides_reach_only_the_s2l_rows():
    rows = dict(runs(DATASETS["dsb2018fluo"], 4, ["method.module.warmup_epochs=1"], oracle=True))
    assert "callbacks=s2l_pseudo_oracle" in rows[s2l_label(0.3)]
    assert "callbacks=s2l_pseudo_oracle" not in rows[PCE_30]
    assert "method.module.warmup_epochs=1" in rows[PCE_30]
    assert not any("warmup_epochs=" in o for o in rows[FULL]) and "~method.module.warmup_epochs" in rows[FULL]
    assert rows[FULL].count("trainer.max_epochs=4") == 1
    assert set(COMPARED) <= set(rows)


def test_dsb_full_row_decodes_instances_as_the_s2l_runs_do():
    full = dict(runs(DATASETS["dsb2018fluo"], None, [], oracle=False))[FULL]
    assert "+method.module.postproc.method=watershed" in full and "+method.module.postproc.footprint_radius=6" in full
    assert "method.module.postproc.min_area=64" in full
    reference = dict(runs(DATASETS["dsb2018fluo"], None, [], oracle=False, extra=["data.instances.method=cc"]))[FULL]
    assert [o for o in reference if "postproc" in o] == ["method.module.postproc.min_area=64",
                                                         "+method.module.postproc.method=cc",
                                                         "+method.module.postproc.connectivity=8"]


def test_table_means_sample_sd_and_per_seed_values():
    results = [(s2l_label(0.3), fake_runs([0.5, 0.6])), (PCE_30, fake_runs([0.4, 0.5])), (FULL, fake_runs([0.6, 0.6]))]
    header, *cells = parse_text_table(results_table(results, spread=True))
    s2l = dict(zip(header, cells[0], strict=True))
    assert s2l["run"] == "S2L 30 %" and float(s2l["AJI"]) == pytest.approx(0.55)
    assert float(s2l["AJI sd"]) == pytest.approx(0.0707, abs=1e-4)  # sample sd (ddof 1) of 0.5 and 0.6
    assert s2l["AJI per seed"] == "0.5000 0.6000" and float(s2l["wall min"]) == pytest.approx(2.0)


def test_targets_need_the_ratio_and_a_win_on_every_seed():
    passing = [(s2l_label(0.3), fake_runs([0.58, 0.6])), (PCE_30, fake_runs([0.5, 0.59])), (FULL, fake_runs([0.6, 0.6]))]
    assert targets(passing, [7, 42]).endswith("7 yes, 42 yes (met)") and "(>= 0.95: met)" in targets(passing, [7, 42])
    one_loss = [(s2l_label(0.3), fake_runs([0.58, 0.6])), (PCE_30, fake_runs([0.59, 0.5])), (FULL, fake_runs([0.7, 0.7]))]
    text = targets(one_loss, [7, 42])
    assert "7 NO, 42 yes (NOT met)" in text and "= 0.843 (>= 0.95: NOT met)" in text


def test_every_dataset_names_an_existing_experiment():
    for dataset in DATASETS.values():
        assert OmegaConf.is_config(dataset.s2l_config())
