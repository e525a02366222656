"""`method=cyclic` end to end on tiny synthetic images: every stage, the stopping rule, no training mask opened
after the tile labels are cached, a run killed mid-loop resuming to identical files, and infer.py on the result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cyclic_synth import train_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from cellseg.pipeline.checks import ConfigError, check_supervision
from cellseg.pipeline.cyclic import check_cyclic_config
from cellseg.tasks.train import train
from cellseg.utils.ignore import IGNORE_INSTANCE
from cellseg.utils.io import read_label
from cellseg.utils.project import read_run_info, save_run_info

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from compare_runs import compare_runs  # noqa: E402
from run_helpers import environment, kill_at_step, run_train  # noqa: E402

STAGES_LOOP_1 = ("tiles_0", "classifier_1", "relevance_1", "pseudo_1", "detector_1", "selftrain_1", "evaluate_1")


def compose_cyclic(overrides: list[str], output_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


def test_cyclic_runs_every_stage_stops_by_its_rule_and_never_reopens_masks(tmp_path):
    overrides = train_overrides(tmp_path, loops=3) + ["method.stop_eps=1.01", "method.evaluate_every_loop=true"]
    cfg = compose_cyclic(overrides, tmp_path / "run")
    check_supervision(cfg)
    metrics = train(cfg)
    out = tmp_path / "run"
    for key in (*STAGES_LOOP_1, "classifier_2", "pseudo_2", "detector_2", "evaluate_2"):
        assert (out / key / "done.json").is_file(), key
    # 1 - F1 <= 1 < stop_eps: the rule stops after loop 2 (never after loop 1), before its self-training
    assert not (out / "classifier_3").exists() and not (out / "selftrain_2").exists()
    loops = json.loads((out / "loops.json").read_text())
    assert loops["final_loop"] == 2 and [r["loop"] for r in loops["loops"]] == [1, 2]
    assert loops["loops"][1]["pseudo_change"] is not None and "test/aji" in loops["loops"][1]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 1 and metrics["test/aji"] == pytest.approx(summary["per_image_mean"]["aji"])
    label = read_label(out / "pseudo_2" / "labels" / "train0.png")
    assert label.shape == (128, 128) and 0 <= label.min() and label.max() <= IGNORE_INSTANCE

    # the tile labels come back from the pipeline cache: with the training masks gone, a new run still trains
    train_labels = Path(cfg.data.root) / "Synth" / "train" / "labels"
    shutil.rmtree(train_labels)
    again = compose_cyclic([*overrides, "method.loops=1"], tmp_path / "again")
    save_run_info(again, tmp_path / "again")  # as train.py does: the run record then counts the labels used
    train(again)
    assert (tmp_path / "again" / "evaluate_1" / "done.json").is_file()
    assert (tmp_path / "again" / "tiles_0" / "train.csv").read_bytes() == (out / "tiles_0" / "train.csv").read_bytes()
    # ... and the run record counts the tiles it trained on from those cached tables, not from the masks
    tables = [(out / "tiles_0" / name).read_text().splitlines()[1:] for name in ("train.csv", "held_out.csv")]
    rows = [line.split(",") for table in tables for line in table]
    used = read_run_info(tmp_path / "again")["record"]["annotation_used"]
    assert used["format"] == "tiles" and used["tiles"] == len(rows) > 0
    assert used["labelled_images"] == len({row[0] for row in rows})


def test_lrp_relevance_of_the_mlp_head_feeds_the_pseudo_stage(tmp_path):
    """The reference's pairing: LRP needs no linear head. Maps at native size in [0, 1], pseudo instances made."""
    overrides = train_overrides(tmp_path, loops=1) + [
        "model.classifier.head=mlp", "method.relevance.mode=lrp", "method.pseudo.tau=0.05"]
    cfg = compose_cyclic(overrides, tmp_path / "run")
    check_cyclic_config(cfg)
    train(cfg)
    out = tmp_path / "run"
    maps = sorted((out / "relevance_1" / "maps").glob("*.npy"))
    assert len(maps) == 3
    for path in maps:
        relevance = np.load(path).astype(np.float32)
        assert relevance.shape == (128, 128) and relevance.min() >= 0 and relevance.max() == pytest.approx(1.0)
    assert json.loads((out / "pseudo_1" / "done.json").read_text())["summary"]["instances"] >= 0
    assert (out / "evaluate_1" / "done.json").is_file()


@pytest.mark.parametrize(("head", "mode", "match"), [("mlp", "cam", "grad_cam or lrp"), ("linear", "lime", "lrp")])
def test_relevance_mode_refusals(tmp_path, head, mode, match):
    cfg = compose_cyclic(["method=cyclic", f"model.classifier.head={head}", f"method.relevance.mode={mode}"],
                         tmp_path / "run")
    with pytest.raises(ConfigError, match=match):
        check_cyclic_config(cfg)


def test_cyclic_killed_mid_loop_resumes_to_identical_files(tmp_path):
    overrides = [*train_overrides(tmp_path, loops=1), "method.detector.max_steps=3",
                 "callbacks.last_checkpoint.every_n_train_steps=1"]
    first, killed = tmp_path / "first", tmp_path / "killed"
    run_train(*overrides, f"hydra.run.dir={first}")
    kill_at_step(2, tmp_path / "paused", *overrides, f"hydra.run.dir={killed}", "+callbacks.pause.where=detector_1")
    assert (killed / "pseudo_1" / "done.json").is_file() and not (killed / "detector_1" / "done.json").exists()
    assert (killed / "detector_1" / "checkpoints" / "last.ckpt").is_file()  # resumed from step 2, not restarted
    run_train(*overrides, f"hydra.run.dir={killed}")
    identical, differences = compare_runs(first, killed)
    assert differences == []
    assert identical > 0 and (killed / "metrics.json").is_file()

    # infer.py runs the final detector like any other method's checkpoint, from the .ckpt file alone
    predictions, lone = tmp_path / "predictions", tmp_path / "lone" / "detector.ckpt"
    lone.parent.mkdir()
    shutil.copy(killed / "detector_1" / "checkpoints" / "last.ckpt", lone)
    images = Path(overrides[2].split("=", 1)[1]) / "Synth" / "test" / "images"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), f"ckpt_path={lone}",
                             f"input_dir={images}", f"hydra.run.dir={predictions}"],
                            env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(predictions.rglob("*.png"))) >= 1
    features = json.loads(next(predictions.rglob("*.geojson")).read_text())["features"]
    assert features and all(0 <= f["properties"]["measurements"]["score"] <= 1 for f in features)  # detection scores


@pytest.mark.parametrize(("method", "supervision"), [("cyclic", "scribble"), ("cyclic", "full"),
                                                     ("supervised", "image_label"), ("s2l", "image_label")])
def test_impossible_supervision_pairs_are_refused(tmp_path, method, supervision):
    cfg = compose_cyclic([f"method={method}", f"supervision={supervision}"], tmp_path / "run")
    with pytest.raises(ConfigError, match=f"does not support supervision={supervision}"):
        check_supervision(cfg)


@pytest.mark.parametrize("data", ["monuseg", "tnbc", "consep", "dsb2018fluo"])
def test_cyclic_experiment_composes_on_other_datasets(tmp_path, data):
    cfg = compose_cyclic(["experiment=cyclic_cpu_monuseg", f"data={data}"], tmp_path / "run")
    check_supervision(cfg)
    assert cfg.method.name == "cyclic" and cfg.supervision.kind == "image_label" and cfg.data.name == data
