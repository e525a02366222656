"""COIN driver: stage folders and done.json, resume after an interruption, cache, recursion bookkeeping,
threshold scope, accumulation of confident instances, fail-fast settings, oracle kept out of the pipeline."""

from __future__ import annotations

import ast
import inspect
import json
import math
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from coin_pipeline_synth import CONFIG_DIR, compose_coin, make_dataset
from omegaconf import OmegaConf

import cellseg.methods.coin
from cellseg.data.intensity import stretch_intensity
from cellseg.data.weak.pseudo_instances import merge_instance_sets
from cellseg.methods.coin.features import ImageFeatures
from cellseg.methods.coin.prototypes import cosine_heatmaps, image_heatmaps
from cellseg.methods.coin.scoring import IGNORE, thresholds_for
from cellseg.metrics.pseudo_labels import pseudo_label_quality, summarise_quality
from cellseg.pipeline import coin as coin_pipeline
from cellseg.pipeline.coin import CoinPipeline, coin_plan, max_steps_for
from cellseg.pipeline.stage import Stage
from cellseg.tasks.infer import load_inference_model
from cellseg.utils.io import read_label

torch.set_num_threads(1)
STAGES_T2 = ["evaluate_2", "predict_1", "propagate_0", "pseudo_0", "pseudo_1", "train_1", "train_2", "ucis_0"]


@pytest.fixture
def data_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


def done(run: Path, key: str) -> dict:
    return json.loads((run / key / "done.json").read_text())


def counting(monkeypatch, name: str, fail_on: int | None = None) -> list:
    """Wrap pipeline.<name>: record each call; raise on call number `fail_on` (1-based)."""
    original, calls = getattr(coin_pipeline, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if fail_on is not None and len(calls) == fail_on:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(coin_pipeline, name, wrapper)
    return calls


def test_two_rounds_create_every_stage_with_chained_hashes(tmp_path, data_root, monkeypatch):
    cfg = compose_coin(tmp_path, "method.rounds=2", "method.accumulate_confident=true", data_root=data_root)
    metrics = CoinPipeline(cfg).run()
    run = Path(cfg.paths.output_dir)
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == STAGES_T2
    records = {key: done(run, key) for key in STAGES_T2}
    chain = {"propagate_0": ["ucis_0"], "pseudo_0": ["propagate_0"], "train_1": ["pseudo_0"],
             "predict_1": ["train_1"], "pseudo_1": ["predict_1", "pseudo_0"], "train_2": ["pseudo_1"],
             "evaluate_2": ["train_2"]}
    for key, inputs in chain.items():
        assert records[key]["inputs"] == [records[i]["hash"] for i in inputs], key
    for key, record in records.items():  # the recorded hash is the hash of the recorded config and inputs
        stage = Stage(record["stage"], record["round"], run / key, record["config"], record["inputs"])
        assert stage.hash == record["hash"], key
    # the training labels were never needed: the synthetic train split has no labels folder at all
    assert not (data_root / "Synth" / "train" / "labels").exists()
    assert json.loads((run / "metrics.json").read_text())["n_images"] == 1
    assert "test/aji" in metrics and records["evaluate_2"]["summary"]["metrics"] == metrics
    # P: uint16 PNG, 0 / ids / 65535; accumulation keeps every instance accepted in round 0
    for image_id in ("train0", "train1"):
        first, second = (read_label(run / f"pseudo_{t}" / "labels" / f"{image_id}.png") for t in (0, 1))
        for label in (first, second):
            ids = np.unique(label)
            assert set(ids) <= set(range(int(label.max()) + 1)) | {IGNORE}
        for instance_id in (i for i in np.unique(first) if 0 < i < IGNORE):
            kept = np.unique(second[first == instance_id])
            assert len(kept) == 1 and 0 < kept[0] < IGNORE

    # a round's checkpoint alone (no run folder beside it) rebuilds the round's EMA network for inference
    lone = tmp_path / "lone" / "round2.ckpt"
    lone.parent.mkdir()
    shutil.copy(Path(records["train_2"]["summary"]["checkpoint"]), lone)
    module, _ = load_inference_model(lone)
    stage = Stage("train", 2, run / "train_2", records["train_2"]["config"], records["train_2"]["inputs"],
                  summary=records["train_2"]["summary"])
    reference = CoinPipeline(cfg).trained_module(stage).eval()
    image = torch.rand(3, 64, 64)
    np.testing.assert_array_equal(module.predict_instances(image), reference.predict_instances(image))

    before = {key: (run / key / "done.json").stat().st_mtime_ns for key in STAGES_T2}
    trainers, original = [], CoinPipeline.build_trainer
    monkeypatch.setattr(CoinPipeline, "build_trainer", lambda self, *a: trainers.append(a) or original(self, *a))
    again = CoinPipeline(cfg).run()
    assert trainers == [] and again == metrics
    assert before == {key: (run / key / "done.json").stat().st_mtime_ns for key in STAGES_T2}


def test_interrupted_stage_resumes_and_finished_stages_are_skipped(tmp_path, data_root, monkeypatch):
    cfg = compose_coin(tmp_path, "method.rounds=0", "method.cache=false", data_root=data_root)
    run = Path(cfg.paths.output_dir)
    scored = counting(monkeypatch, "score_image_prompts", fail_on=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        CoinPipeline(cfg).run()
    assert (run / "ucis_0" / "done.json").is_file() and (run / "propagate_0" / "done.json").is_file()
    assert not (run / "pseudo_0" / "done.json").exists()
    assert sorted(p.name for p in (run / "pseudo_0" / "scores").iterdir()) == ["train0.json"]
    first_score_mtime = (run / "pseudo_0" / "scores" / "train0.json").stat().st_mtime_ns
    finished = {k: (run / k / "done.json").stat().st_mtime_ns for k in ("ucis_0", "propagate_0")}

    ucis_calls = counting(monkeypatch, "ucis_instances")
    scored = counting(monkeypatch, "score_image_prompts")
    assert CoinPipeline(cfg).run() == {}
    assert ucis_calls == [] and len(scored) == 1  # only the image the crash interrupted
    assert (run / "pseudo_0" / "scores" / "train0.json").stat().st_mtime_ns == first_score_mtime
    assert finished == {k: (run / k / "done.json").stat().st_mtime_ns for k in ("ucis_0", "propagate_0")}
    assert sorted(p.name for p in (run / "pseudo_0" / "labels").iterdir()) == ["train0.png", "train1.png"]
    assert read_label(run / "pseudo_0" / "labels" / "train0.png").dtype == np.int32  # read back from uint16


def test_changed_scoring_recomputes_only_pseudo_labels_and_cache_serves_new_runs(tmp_path, data_root, monkeypatch):
    cfg = compose_coin(tmp_path, "method.rounds=0", data_root=data_root)
    CoinPipeline(cfg).run()
    run = Path(cfg.paths.output_dir)
    old = {k: done(run, k)["hash"] for k in ("ucis_0", "propagate_0", "pseudo_0")}

    ucis_calls, scored = counting(monkeypatch, "ucis_instances"), counting(monkeypatch, "score_image_prompts")
    changed = compose_coin(tmp_path, "method.rounds=0", "method.scoring.strategy=mean", data_root=data_root)
    CoinPipeline(changed).run()
    new = {k: done(run, k)["hash"] for k in ("ucis_0", "propagate_0", "pseudo_0")}
    assert new["ucis_0"] == old["ucis_0"] and new["propagate_0"] == old["propagate_0"]
    assert new["pseudo_0"] != old["pseudo_0"] and ucis_calls == [] and len(scored) == 2

    # a new run folder with the same configuration restores stages 0-2 from ${paths.cache_dir}
    scored.clear()
    other = compose_coin(tmp_path, "method.rounds=0", data_root=data_root, run="other_run")
    CoinPipeline(other).run()
    assert ucis_calls == [] and scored == []
    other_run = Path(other.paths.output_dir)
    assert done(other_run, "pseudo_0")["hash"] == old["pseudo_0"]
    assert (other_run / "pseudo_0" / "labels" / "train1.png").is_file()


def test_propagation_off_writes_the_ucis_foreground_without_computing_features(tmp_path, data_root, monkeypatch):
    cfg = compose_coin(tmp_path, "method.rounds=0", "method.refine.enabled=false", data_root=data_root)
    features = counting(monkeypatch, "image_heatmaps")
    CoinPipeline(cfg).run()
    run = Path(cfg.paths.output_dir)
    assert features == [] and not (run / "propagate_0" / "stats.json").exists()
    for image_id in ("train0", "train1"):
        ucis = read_label(run / "ucis_0" / f"{image_id}.png")
        mask = read_label(run / "propagate_0" / "masks" / f"{image_id}.png")
        assert ucis.max() > 0
        np.testing.assert_array_equal(mask > 0, ucis > 0)
    assert (run / "pseudo_0" / "done.json").is_file()


def test_threshold_scope_dataset_pools_scores_across_images(tmp_path, data_root):
    scores = {"a": {1: 0.2, 2: 0.4}, "b": {1: 0.9, 2: 0.7, 3: 0.8}, "empty": {}}
    per_image = thresholds_for(scores, strategy="mean", threshold_scope="image")
    assert per_image["a"] == pytest.approx(0.3) and per_image["b"] == pytest.approx(0.8)
    assert per_image["empty"] == math.inf  # nothing accepted in an image without instances
    pooled = thresholds_for(scores, strategy="mean", threshold_scope="dataset")
    assert list(pooled.values()) == [pytest.approx(np.mean([0.2, 0.4, 0.9, 0.7, 0.8]))] * 3
    capped = thresholds_for(scores, strategy="mean+std", cap=0.5, threshold_scope="dataset")
    assert list(capped.values()) == [0.5] * 3
    with pytest.raises(ValueError, match="threshold_scope"):
        thresholds_for(scores, threshold_scope="batch")

    cfg = compose_coin(tmp_path, "method.rounds=0", "method.scoring.threshold_scope=dataset", data_root=data_root)
    summary = CoinPipeline(cfg).pseudo_labels(0).summary
    thetas = [v["theta"] for v in summary["images"].values()]
    all_scores = [s for f in sorted((Path(cfg.paths.output_dir) / "pseudo_0" / "scores").iterdir())
                  for s in json.loads(f.read_text())["scores"].values()]
    assert len(set(thetas)) == 1
    assert thetas[0] == pytest.approx(min(np.mean(all_scores) + np.std(all_scores), 0.9))


def test_accumulate_confident_keeps_earlier_instances_and_adds_new_distinct_ones():
    previous = np.zeros((10, 12), dtype=np.uint16)
    previous[1:4, 1:4] = 1          # A, accepted in round t-1
    previous[6:9, 6:9] = 2          # B
    previous[0, 9:] = IGNORE
    new = np.zeros_like(previous)
    new[1:4, 1:5] = 3               # A' : IoU 9/12 with A -> duplicate, dropped
    new[5:9, 5:7] = 1               # D  : IoU 4/14 with B -> added, B keeps its pixels
    new[0:2, 8:11] = 2              # C  : new, no overlap
    new[9, :3] = IGNORE
    out = merge_instance_sets(previous, new)
    assert out.dtype == np.uint16
    assert (out[1:4, 1:4] == 1).all() and (out[6:9, 6:9] == 2).all()      # earlier instances intact, ids first
    assert (out[1:4, 4] == IGNORE).all()                                 # rest of a dropped duplicate: ignore
    d_only = (new == 1) & (previous != 2)
    c_only = new == 2
    assert len(np.unique(out[d_only])) == 1 and len(np.unique(out[c_only])) == 1
    assert {int(out[d_only][0]), int(out[c_only][0])} == {3, 4}
    assert (out[9, :3] == IGNORE).all() and (out[0, 11] == 0)            # ignore and background follow round t


def test_coin_plan_orders_rounds_and_evaluations():
    assert coin_plan(0, True, False) == [("pseudo", 0)]
    assert coin_plan(2, True, False) == [("pseudo", 0), ("train", 1), ("pseudo", 1), ("train", 2), ("evaluate", 2)]
    assert coin_plan(2, True, True) == [("pseudo", 0), ("train", 1), ("pseudo", 1), ("evaluate", 1), ("train", 2),
                                        ("evaluate", 2)]
    assert coin_plan(1, False, True) == [("pseudo", 0), ("train", 1)]


def test_max_steps_auto_matches_the_reference_budget():
    from omegaconf import OmegaConf

    train = OmegaConf.create({"max_steps": "auto", "epochs": 100, "repeat": 100, "batch_size": 16})
    assert max_steps_for(train, 37) == 23100  # MoNuSeg (37 images): ~23.1k iterations (docs/methods/coin.md#training)
    assert max_steps_for(OmegaConf.create({"max_steps": 7}), 37) == 7


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["method/prompter=sam"], ValueError, r"method\.prompter\.weights=.*prompter: classical"),
        (["method/ucis=folder"], ValueError, r"method\.ucis\.dir"),
        (["method.module.inference.crf.enabled=true"], ImportError, r"pip install 'cellseg\[crf\]'"),
        (["method.refine.crf.enabled=true"], ImportError, r"pip install 'cellseg\[crf\]'"),
        (["method.rounds=-1"], ValueError, r"method\.rounds"),
        (["experiment=coin_paper_monuseg"], ValueError, r"(?s)method\.ucis\.dir=.*method\.prompter\.weights="),
        (["method/features=vit", "method.features.cache=all"], ValueError, r"method\.features\.cache='all'"),
        (["method.ucis.threshold=mean"], ValueError, r"method\.ucis\.threshold='mean'"),
        (["method.stain=eosin"], ValueError, r"method\.stain='eosin'"),
        (["method.prompter.method=sam"], ValueError, r"method\.prompter\.method='sam'"),
    ],
)
def test_impossible_settings_stop_before_any_work(tmp_path, data_root, overrides, error, message):
    if "crf" in overrides[0]:
        try:
            import pydensecrf  # noqa: F401
            pytest.skip("pydensecrf is installed: the CRF path can run")
        except ImportError:
            pass
    cfg = compose_coin(tmp_path, *overrides, data_root=data_root)
    with pytest.raises(error, match=message):
        CoinPipeline(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_oracle_counts_and_is_never_imported_by_the_pipeline():
    gt = np.zeros((8, 8), dtype=np.int32)
    gt[0:3, 0:3], gt[5:8, 5:8] = 1, 2
    pseudo = np.zeros((8, 8), dtype=np.uint16)
    pseudo[0:3, 0:3] = 1            # matches nucleus 1 (IoU 1)
    pseudo[4:6, 0:2] = 2            # matches nothing
    pseudo[5:8, 5:8] = IGNORE
    counts = pseudo_label_quality(pseudo, gt)
    assert (counts["accepted"], counts["gt"], counts["matched_accepted"], counts["matched_gt"]) == (2, 2, 1, 1)
    summary = summarise_quality([counts, counts])
    assert summary["precision"] == 0.5 and summary["coverage"] == 0.5
    assert summary["ignore_fraction"] == pytest.approx(9 / 64)
    package = Path(cellseg.__file__).parent
    for path in sorted([*(package / "methods").rglob("*.py"), *(package / "pipeline").rglob("*.py"),
                        *(package / "data" / "weak").rglob("*.py")]):
        name = str(path.relative_to(package))
        imports = [node for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.Import, ast.ImportFrom))]
        modules = [n.module or "" for n in imports if isinstance(n, ast.ImportFrom)]
        modules += [alias.name for n in imports for alias in n.names]
        assert not any(m.endswith("pseudo_labels") and "metrics" in m for m in modules), name


@pytest.mark.parametrize("data", ["monuseg", "tnbc"])
def test_sub_groups_and_experiments_compose_for_each_dataset(tmp_path, data):
    sam = compose_coin(tmp_path, f"data={data}", "method/prompter=sam", "method/ucis=folder", "method/features=vit")
    targets = (sam.method.prompter._target_, sam.method.ucis._target_, sam.method.features._target_)
    assert sam.data.name == data and targets == (
        "cellseg.methods.coin.prompter.SamPrompter", "cellseg.methods.coin.ucis.FolderUcis",
        "cellseg.methods.coin.vit_features.VitFeatures")
    assert sam.method.prompter.prompt_batch == 64 and sam.supervision.kind == "annotation_free"
    paper = compose_coin(tmp_path, "experiment=coin_paper_monuseg", f"data={data}", tiny=False)
    assert (paper.data.name, paper.method.prompter.prompt_point) == (data, "centroid")
    assert paper.method.refine.crf.enabled and paper.method.module.inference.crf.enabled
    assert paper.model.encoder == "resnet101" and paper.model.output_stride == 8
    cpu = compose_coin(tmp_path, "experiment=coin_cpu_monuseg", f"data={data}", tiny=False)
    assert cpu.data.name == data and cpu.method.prompter.method == "local_otsu" and cpu.model.output_stride == 16
    unet = compose_coin(tmp_path, "experiment=coin_cpu_unet_monuseg", f"data={data}", tiny=False)
    assert unet.data.name == data and unet.model.arch == "unet" and unet.method.module.split == "distance_watershed"


SUB_GROUP_FILES = sorted(p for group in ("ucis", "features", "prompter")
                         for p in (Path(CONFIG_DIR) / "method" / group).glob("*.yaml"))


@pytest.mark.parametrize("path", SUB_GROUP_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sub_group_nodes_hold_exactly_their_constructor_arguments(path):
    """No padding keys and no hidden defaults: every key is an argument of the `_target_`, every argument but
    `stain` (method.stain, passed by the driver) is declared in the node."""
    node = OmegaConf.load(path)
    parameters = set(inspect.signature(hydra.utils.get_object(node._target_)).parameters)
    assert {key for key in node if not key.startswith("_")} == parameters - {"stain"}


def test_heatmaps_from_blocks_with_global_or_per_image_foreground_prototype():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 6, 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=0, keepdims=True)
    ucis = np.zeros((6, 8), dtype=np.int32)
    ucis[1:3, 1:4], ucis[4:6, 5:8] = 1, 2
    whole = ImageFeatures(1, lambda zoom: iter([(slice(0, 6), slice(0, 8), feats)]))
    halves = ImageFeatures(1, lambda zoom: iter([(slice(0, 6), slice(0, 3), feats[:, :, :3]),
                                                 (slice(0, 6), slice(3, 8), feats[:, :, 3:])]))
    mu_bg, own_fg = feats[:, ucis == 0].mean(axis=1), feats[:, ucis > 0].mean(axis=1)
    per_image = image_heatmaps(halves, ucis, None)
    np.testing.assert_allclose(per_image, cosine_heatmaps(feats, mu_bg, own_fg), atol=1e-6)
    mu_fg = rng.normal(size=4)
    global_fg = image_heatmaps(halves, ucis, mu_fg)
    np.testing.assert_allclose(global_fg, image_heatmaps(whole, ucis, mu_fg), atol=1e-6)
    np.testing.assert_allclose(global_fg, cosine_heatmaps(feats, mu_bg, mu_fg), atol=1e-6)
    assert image_heatmaps(whole, np.zeros_like(ucis), None) is None  # no foreground: no per-image prototype
    assert image_heatmaps(whole, np.ones_like(ucis), mu_fg) is None  # no background


def test_intensity_stretch_reaches_the_stages_and_keys_their_hashes_only_when_set(tmp_path, data_root):
    plain = CoinPipeline(compose_coin(tmp_path, data_root=data_root))
    stretched = CoinPipeline(compose_coin(tmp_path, "data.stretch_percentiles=[5,95]", data_root=data_root))
    assert "stretch_percentiles" not in plain.data_identity()  # unchanged hashes for existing caches
    assert stretched.data_identity()["stretch_percentiles"] == [5.0, 95.0]
    image_id = plain.ids[0]
    np.testing.assert_array_equal(stretched.read_image(image_id), stretch_intensity(plain.read_image(image_id), (5.0, 95.0)))


def test_12bit_images_reach_the_classical_stages_as_floats_and_give_the_8bit_pseudo_labels(tmp_path, data_root):
    import tifffile

    from cellseg.utils.io import read_image

    deep = tmp_path / "deep"  # the same images x 16 in 16-bit TIFFs: 12-bit data
    for path in (data_root / "Synth").rglob("*.png"):
        target = deep / path.relative_to(data_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.name == "images":
            tifffile.imwrite(target.with_suffix(".tif"), read_image(path).astype(np.uint16) * 16)
        else:
            target.write_bytes(path.read_bytes())
    plain = CoinPipeline(compose_coin(tmp_path, data_root=data_root))
    twelve = CoinPipeline(compose_coin(tmp_path, data_root=deep, run="deep"))
    image_id = plain.ids[0]
    eight_bit, deep_image = plain.read_image(image_id), twelve.read_image(image_id)
    assert eight_bit.dtype == np.uint8 and deep_image.dtype == np.float32 and deep_image.max() <= 1.0
    assert len(np.unique(deep_image)) == len(np.unique(eight_bit))
    first, second = plain.pseudo_labels(0), twelve.pseudo_labels(0)
    for image_id in plain.ids:  # UCIS, handcrafted features and prompter agree on the two encodings
        np.testing.assert_array_equal(read_label(second.dir / "labels" / f"{image_id}.png"),
                                      read_label(first.dir / "labels" / f"{image_id}.png"))
