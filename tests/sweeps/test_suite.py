"""Benchmark suites: the shipped suite files compose, their runs never share a folder, a tiny suite trains every
run over two seeds and writes one report, and a suite started again skips what completed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cellseg.sweeps.suite import load_suite, main, run_suite

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES = sorted((REPO_ROOT / "sweeps" / "suites").glob("*.yaml"))


def composed(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_run_of_a_shipped_suite_composes_into_a_folder_of_its_own(path):
    suite = load_suite(path)
    folders = {}
    for run, overrides in suite.runs.items():
        cfg = composed([*overrides, f"seed={suite.seeds[0]}"])
        folders[run] = (cfg.experiment_name, cfg.supervision.budget, cfg.method.name)
    assert len(set(folders.values())) == len(folders), folders
    assert suite.reference in {method for _, _, method in folders.values()}
    assert {"annotation_free", "image_label", "scribble", "full"} == {
        composed([*overrides, "seed=1"]).supervision.kind for overrides in suite.runs.values()}


def test_a_malformed_suite_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n  a: experiment=x\n")
    with pytest.raises(ValueError, match=r"bad.yaml: runs.a must be a list of key=value overrides"):
        load_suite(bad)
    bad.write_text("runs:\n  a: [seed=1]\nseed: [1]\n")
    with pytest.raises(ValueError, match=r"unknown keys \['seed'\]"):
        load_suite(bad)


def test_a_tiny_suite_trains_every_run_over_its_seeds_reports_them_and_skips_them_when_started_again(tmp_path,
                                                                                                      caplog):
    smoke = ["debug=smoke", "data.max_images=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
             f"paths.cache_dir={tmp_path / 'cache'}"]
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(OmegaConf.to_yaml(OmegaConf.create({
        "description": "two methods on the sample", "seeds": [1, 2], "reference": "supervised",
        "runs": {"supervised": ["method=supervised", *smoke],
                 "s2l": ["method=s2l", "method.module.warmup_epochs=1", "method.module.ema_period=1", *smoke]}})))
    log_dir = tmp_path / "logs"
    main([str(suite_file), "--log-dir", str(log_dir)])

    with open(log_dir / "report" / "results.csv", newline="") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["s2l", "supervised"]
    assert all(int(row["n_seeds"]) == 2 for row in rows.values())
    assert (log_dir / "report" / "index.html").is_file()
    jobs = sorted(log_dir.glob("*/multiruns/*/tiny-*/*/metrics.json"))
    assert len(jobs) == 4  # 2 runs x 2 seeds, each run in its own sweep folder

    caplog.set_level("INFO")
    assert run_suite(load_suite(suite_file), log_dir, extra=[], dry_run=False) == []
    assert caplog.text.count("every seed completed, skipped") == 2
