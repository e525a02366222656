"""The three commands as a user runs them: train.py, then eval.py on its predictions, then infer.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf
from PIL import Image

from cellseg.utils.io import read_image, read_label, write_label

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TEST = REPO_ROOT / "data" / "sample" / "MoNuSegSample" / "test"


def run(script: str, *overrides: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *overrides], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    # run from another working directory: outputs must not depend on it; infer.py must repeat the stretch
    result = run("train.py", "debug=smoke", f"hydra.run.dir={out}", f"paths.cache_dir={out.parent / 'cache'}",
                 "data.stretch_percentiles=[1,99.8]", cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_train_writes_its_run_folder(trained_run):
    for name in ("metrics.json", "per_image.csv", "run_info.json", "config_resolved.yaml", ".hydra/config.yaml",
                 "checkpoints/last.ckpt"):
        assert (trained_run / name).exists(), name
    info = json.loads((trained_run / "run_info.json").read_text())
    assert info["seed"] == 42 and info["packages"]["torch"]
    # full supervision: every training label's instances, counted here from the sample's label files
    first = OmegaConf.load(trained_run / "config_resolved.yaml").data.max_images  # debug=smoke: the first 3
    labels = [read_label(path) for path in sorted((SAMPLE_TEST.parent / "train" / "labels").iterdir())[:first]]
    used = info["record"]["annotation_used"]
    assert used["format"] == "instance" and used["images"] == used["labelled_images"] == len(labels)
    assert used["instances"] == sum(len(np.unique(label[label > 0])) for label in labels)
    assert used["labelled_pixels"] == sum(int((label > 0).sum()) for label in labels)


def test_eval_reproduces_the_training_metrics(trained_run, tmp_path):
    out = tmp_path / "eval"
    result = run("eval.py", "data=sample", "split=test", f"pred_dir={trained_run / 'predictions' / 'test'}",
                 f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "aji" in result.stdout
    expected = json.loads((trained_run / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got["per_image_mean"] == expected["per_image_mean"] and got["pooled"] == expected["pooled"]
    assert (out / "per_image.csv").read_text().count("\n") == 4


def test_eval_lists_missing_extra_and_mismatched_files_and_writes_nothing(trained_run, tmp_path):
    preds = tmp_path / "preds"
    shutil.copytree(trained_run / "predictions" / "test", preds)
    files = sorted(preds.glob("*.png"))
    files[0].unlink()
    shutil.copy(files[1], preds / "not-in-the-dataset.png")
    tifffile.imwrite(preds / f"{files[2].stem}.tif", read_label(files[2])[:100, :100].astype("uint16"))
    files[2].unlink()
    out = tmp_path / "eval"
    result = run("eval.py", "data=sample", "split=test", f"pred_dir={preds}", f"hydra.run.dir={out}")
    assert result.returncode != 0
    for fragment in (files[0].stem, "not-in-the-dataset", files[2].stem):
        assert fragment in result.stderr
    assert not (out / "metrics.json").exists() and not (out / "per_image.csv").exists()


def test_infer_writes_every_output_format(trained_run, tmp_path):
    out = tmp_path / "infer"
    result = run("infer.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"input_dir={SAMPLE_TEST / 'images'}",
                 f"hydra.run.dir={out}", "infer.tile=256", "infer.overlap=32")
    assert result.returncode == 0, result.stderr[-3000:]
    ids = sorted(p.stem for p in (SAMPLE_TEST / "images").glob("*.png"))
    for folder, suffix in (("instances", ".png"), ("tiff", ".tif"), ("geojson", ".geojson"), ("csv", ".csv")):
        assert sorted(p.stem for p in (out / folder).glob(f"*{suffix}")) == ids, folder
    collection = json.loads((out / "geojson" / f"{ids[0]}.geojson").read_text())
    assert collection["type"] == "FeatureCollection"


def test_infer_reproduces_the_runs_test_predictions_with_its_intensity_stretch(trained_run, tmp_path):
    out = tmp_path / "infer"
    # the module's own inference settings (method=supervised), so only the preprocessing could differ
    result = run("infer.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"input_dir={SAMPLE_TEST / 'images'}",
                 f"hydra.run.dir={out}", "infer.tile=512", "infer.overlap=64", "infer.hflip=false", "infer.outputs=[png]")
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in sorted((trained_run / "predictions" / "test").glob("*.png")):
        assert (read_label(out / "instances" / expected.name) == read_label(expected)).all(), expected.name


def test_infer_names_a_missing_input_folder(trained_run, tmp_path):
    result = run("infer.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"input_dir={tmp_path / 'none'}",
                 f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode != 0 and "input_dir=" in result.stderr


def test_wandb_offline_run_writes_its_files(tmp_path, monkeypatch):
    out = tmp_path / "wandb_run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = run("train.py", "debug=smoke", "logger=wandb", "test=false", "trainer.max_steps=2",
                 f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def small_inputs(folder: Path, names: dict[str, str]) -> list[str]:
    """128 px crops of the sample's test images saved as `names` {stem: suffix} in `folder`; their stems."""
    folder.mkdir(parents=True)
    sources = sorted((SAMPLE_TEST / "images").glob("*.png"))
    for source, (stem, suffix) in zip(sources, names.items(), strict=False):
        Image.fromarray(read_image(source)[:128, :128]).save(folder / f"{stem}{suffix}")
    return sorted(names)


def infer_outputs(trained_run: Path, input_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run("infer.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"input_dir={input_dir}",
               "infer.tile=256", "infer.overlap=32", "infer.outputs=[png]", *overrides)


def test_infer_reads_jpeg_and_png_and_names_the_other_files(trained_run, tmp_path):
    inputs = tmp_path / "mixed"
    ids = small_inputs(inputs, {"photo": ".jpg", "scan": ".png"})
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "infer"
    result = infer_outputs(trained_run, inputs, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.stem for p in (out / "instances").glob("*.png")) == ids
    warning = next(line for line in (result.stdout + result.stderr).splitlines() if "not images" in line)
    assert "notes.txt" in warning and "WARNING" in warning


def test_infer_writes_one_folder_per_input_folder_and_checkpoint(trained_run, tmp_path):
    logs = tmp_path / "logs"
    first = small_inputs(tmp_path / "a" / "images", {"a1": ".png", "a2": ".jpg"})
    second = small_inputs(tmp_path / "b" / "images", {"b1": ".tif"})  # the same folder name, another path
    for folder in (tmp_path / "a" / "images", tmp_path / "b" / "images"):
        result = infer_outputs(trained_run, folder, f"paths.log_dir={logs}")
        assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(p.parent for p in (logs / "infer" / "runs").glob("*/*/instances"))
    assert len(folders) == 2 and folders[0].parent == folders[1].parent
    assert "-seed42-last-" in folders[0].parent.name  # <experiment>-seed<seed>-<checkpoint stem>-<hash>
    assert all(f.name.startswith("images-") for f in folders)
    written = sorted(sorted(p.stem for p in (f / "instances").iterdir()) for f in folders)
    assert written == sorted([first, second])


def test_infer_names_a_truncated_checkpoint(trained_run, tmp_path):
    run_copy = tmp_path / "copied_run"
    shutil.copytree(trained_run / ".hydra", run_copy / ".hydra")
    source = trained_run / "checkpoints" / "last.ckpt"
    broken = run_copy / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    result = run("infer.py", f"ckpt_path={broken}", f"input_dir={SAMPLE_TEST / 'images'}",
                 f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode != 0
    assert f"cannot read checkpoint {broken}" in result.stderr and "Lightning checkpoint" in result.stderr


def test_eval_refuses_binary_predictions_unless_allowed(trained_run, tmp_path):
    preds = tmp_path / "binary"
    preds.mkdir()
    for path in sorted((trained_run / "predictions" / "test").glob("*.png")):
        write_label(preds / path.name, (read_label(SAMPLE_TEST / "labels" / path.name) > 0) * 255)
    refused = run("eval.py", "data=sample", "split=test", f"pred_dir={preds}", f"hydra.run.dir={tmp_path / 'no'}")
    assert refused.returncode != 0 and "binary or semantic class maps" in refused.stderr
    assert all(p.name in refused.stderr for p in preds.iterdir())
    assert not (tmp_path / "no" / "metrics.json").exists()
    allowed = run("eval.py", "data=sample", "split=test", f"pred_dir={preds}", f"hydra.run.dir={tmp_path / 'yes'}",
                  "allow_class_maps=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "allow_class_maps=true" in allowed.stdout + allowed.stderr and (tmp_path / "yes" / "metrics.json").is_file()


def lone_copy(trained_run: Path, folder: Path) -> Path:
    """The run's last.ckpt copied alone into `folder` (no run folder, no config beside it)."""
    folder.mkdir(parents=True)
    return Path(shutil.copy(trained_run / "checkpoints" / "last.ckpt", folder / "model.ckpt"))


def test_infer_needs_nothing_but_the_checkpoint_file(trained_run, tmp_path):
    inputs = tmp_path / "inputs"
    small_inputs(inputs, {"a": ".png", "b": ".png"})
    beside, alone = tmp_path / "beside", tmp_path / "alone"
    assert infer_outputs(trained_run, inputs, f"hydra.run.dir={beside}").returncode == 0
    result = run("infer.py", f"ckpt_path={lone_copy(trained_run, tmp_path / 'lone')}", f"input_dir={inputs}",
                 "infer.tile=256", "infer.overlap=32", "infer.outputs=[png]", f"hydra.run.dir={alone}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("a.png", "b.png"):
        assert (read_label(alone / "instances" / name) == read_label(beside / "instances" / name)).all()


def test_infer_falls_back_to_the_run_config_for_a_checkpoint_without_recipe(trained_run, tmp_path):
    import torch

    from cellseg.callbacks.inference_recipe import RECIPE_KEY

    old_run = tmp_path / "old_run"
    shutil.copytree(trained_run / ".hydra", old_run / ".hydra")
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    del checkpoint[RECIPE_KEY]
    (old_run / "checkpoints").mkdir()
    torch.save(checkpoint, old_run / "checkpoints" / "last.ckpt")
    inputs = tmp_path / "inputs"
    small_inputs(inputs, {"a": ".png"})
    assert infer_outputs(old_run, inputs, f"hydra.run.dir={tmp_path / 'out'}").returncode == 0
    torch.save(checkpoint, tmp_path / "alone.ckpt")  # no recipe and no run folder: one error saying both
    result = run("infer.py", f"ckpt_path={tmp_path / 'alone.ckpt'}", f"input_dir={inputs}",
                 f"hydra.run.dir={tmp_path / 'out2'}")
    assert result.returncode != 0 and "carries no inference recipe" in result.stderr


def test_infer_segments_a_slide_in_slide_coordinates_and_skips_it_when_done(trained_run, tmp_path):
    import numpy as np
    import pandas as pd

    from cellseg.inference.pyramid import write_pyramidal_tiff

    tiles = [read_image(p) for p in sorted((SAMPLE_TEST / "images").glob("*.png"))[:2]]
    canvas = np.full((900, 1100, 3), 242, dtype=np.uint8)  # two sample tiles on glass
    canvas[50:434, 80:464], canvas[480:864, 640:1024] = tiles
    slide = tmp_path / "slides" / "case01.tif"
    write_pyramidal_tiff(slide, canvas, mpp=0.25, levels=2)
    out = tmp_path / "out"
    overrides = (f"ckpt_path={lone_copy(trained_run, tmp_path / 'lone')}", f"slides={tmp_path / 'slides'}/*.tif",
                 f"hydra.run.dir={out}", "infer.tile=256", "infer.overlap=32", "infer.slide.chunk=448",
                 "infer.slide.margin=32")
    result = run("infer.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "slides" / "case01"
    summary = json.loads((folder / "done.json").read_text())
    assert summary["identity"]["target_mpp"] == 0.25  # the model's data.mpp, from the checkpoint's recipe
    assert 0 < summary["chunks_skipped"] < summary["chunks"]
    features = json.loads((folder / "case01.geojson").read_text())["features"]
    assert len(features) == summary["nuclei"] > 0
    table = pd.read_csv(folder / "case01.csv")
    assert table.centroid_x.between(0, 1100).all() and table.centroid_y.between(0, 900).all()
    assert (table.area_um2 == table.area * 0.25**2).all()
    again = run("infer.py", *overrides)
    assert again.returncode == 0 and ": done in " in again.stdout + again.stderr  # finished: not redone
    assert json.loads((folder / "done.json").read_text()) == summary


def test_infer_takes_exactly_one_kind_of_input(trained_run, tmp_path):
    ckpt = f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"
    both = run("infer.py", ckpt, f"input_dir={SAMPLE_TEST / 'images'}", f"slides={tmp_path}/*.svs",
               f"hydra.run.dir={tmp_path / 'a'}")
    assert both.returncode != 0 and "exactly one of input_dir" in both.stderr
    nothing = run("infer.py", ckpt, f"slides={tmp_path}/*.svs", f"hydra.run.dir={tmp_path / 'b'}")
    assert nothing.returncode != 0 and "no such slide file" in nothing.stderr


def test_infer_accepts_lightning_accelerator_names(trained_run, tmp_path):
    import torch

    result = infer_outputs(trained_run, SAMPLE_TEST / "images", "accelerator=gpu", f"hydra.run.dir={tmp_path / 'o'}")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.returncode != 0 and "accelerator=gpu, but no CUDA device is visible" in result.stderr


def test_infer_runs_one_job_per_slide_through_the_submitit_launcher(trained_run, tmp_path):
    import numpy as np

    from cellseg.inference.pyramid import write_pyramidal_tiff

    tile = read_image(sorted((SAMPLE_TEST / "images").glob("*.png"))[0])
    names = ("left", "right")
    for k, name in enumerate(names):
        canvas = np.full((512, 640, 3), 242, dtype=np.uint8)
        canvas[64:448, 40 + 200 * k:424 + 200 * k] = tile
        write_pyramidal_tiff(tmp_path / f"{name}.tif", canvas, mpp=0.25, levels=1)
    logs = tmp_path / "logs"
    slides = ",".join(str(tmp_path / f"{name}.tif") for name in names)
    command = ("infer.py", "-m", "hydra/launcher=submitit_local", f"slides={slides}", f"paths.log_dir={logs}",
               f"ckpt_path={lone_copy(trained_run, tmp_path / 'lone')}", "infer.tile=256", "infer.overlap=32",
               "infer.slide.chunk=448", "infer.slide.margin=32")
    result = run(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    done = sorted((logs / "infer" / "runs").glob("*/slides-*/slides/*/done.json"))
    assert sorted(p.parent.name for p in done) == sorted(names)
    assert len({p.parents[2] for p in done}) == 2 and len({p.parents[3] for p in done}) == 1  # a folder per job
