"""Cyclic learning driver (docs/methods/cyclic.md#run-folder): `method=cyclic` runs every stage, resumable.

    tiles_0/          train.csv, held_out.csv: image-level tile labels (the only stage that reads training masks,
                      through the `supervision=image_label` generator and its cache)
    classifier_n/     checkpoints/last.ckpt of loop n's tile classifier (from loop 2: trunk <- detector n-1)
    relevance_n/      maps/<id>.npy: the classifier's relevance (CAM or Grad-CAM) of every training image
    pseudo_n/         instances/<id>.png (relevance instances), labels/<id>.png = P_n (uint16, 65535 ignore):
                      loop n-1's confident detections, then the relevance instances, de-duplicated
    detector_n/       checkpoints/last.ckpt of loop n's Mask R-CNN (body <- classifier n's trunk)
    selftrain_n/      detections/<id>.png: confident detections of detector n on the training images
    evaluate_n/       test-split predictions and metrics.json (the last loop; every loop with
                      method.evaluate_every_loop); metrics.json and loops.json are also written to the run folder.

The loop stops after loop n >= 2 when P_n hardly differs from P_{n-1} (1 - object F1 < method.stop_eps); the
final model is the last detector. Nothing after tiles_0 opens a training mask, and nothing selects with ground
truth. The stages are data (`CYCLIC_STAGES`) run by the generic `StageGraph` (docs/framework.md#pipeline-stages).
"""

from __future__ import annotations

import copy
import functools
import logging
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict

from cellseg.callbacks.inference_recipe import build_recipe
from cellseg.callbacks.last_checkpoint import LAST_NAME
from cellseg.data.tiles import Tile, TileDataModule, held_out_tiles, read_tile_table, write_tile_table
from cellseg.data.transforms import AugmentConfig, to_normalised_tensor
from cellseg.data.weak.amount import amount_of_targets
from cellseg.data.weak.image_level import balance_tiles, load_tiles
from cellseg.methods.cyclic.pseudo_instances import (
    candidate_areas,
    extract_pseudo_instances,
    instances_per_image,
    reference_area,
)
from cellseg.methods.cyclic.relevance import relevance_map
from cellseg.methods.cyclic.self_training import next_pseudo_set, set_change, should_stop
from cellseg.methods.cyclic.targets import instance_target
from cellseg.models.cam_classifier import RELEVANCE_MODES
from cellseg.pipeline.checks import ConfigError, check_supervision
from cellseg.pipeline.common import TrainingImages, as_container, load_checkpoint_state, per_image, stage_seed
from cellseg.pipeline.distributed import rank
from cellseg.pipeline.engine import StageGraph, StageSpec, always
from cellseg.pipeline.evaluate import predict_and_evaluate
from cellseg.pipeline.executors import LocalExecutor, progress
from cellseg.pipeline.profiling import profiled
from cellseg.pipeline.stage import Stage
from cellseg.pipeline.trainer import build_loggers, build_trainer, stage_trainer
from cellseg.utils.devices import torch_device
from cellseg.utils.ignore import IGNORE_INSTANCE
from cellseg.utils.io import atomic_path, read_label, write_json, write_label
from cellseg.utils.project import update_run_record

log = logging.getLogger(__name__)

METRIC_FILES = ("metrics.json", "per_image.csv")


def run_cyclic(cfg: DictConfig) -> dict:
    """`method.runner` of method=cyclic: every loop, then the test metrics of the last detector."""
    return CyclicPipeline(cfg).run()


def check_cyclic_config(cfg: DictConfig) -> None:
    """Fail before any work on settings that cannot run."""
    check_supervision(cfg)
    if not cfg.get("train", True):
        raise ConfigError("method=cyclic runs its whole pipeline (finished stages are reused): train=false is not "
                          "supported; score a detector checkpoint with infer.py and eval.py")
    method = cfg.method
    sizes = {"method.loops": method.loops, "method.classifier.steps": method.classifier.steps,
             "method.classifier.batch_size": method.classifier.batch_size,
             "method.detector.max_steps": method.detector.max_steps, "method.detector.crop": method.detector.crop,
             "method.detector.batch_size": method.detector.batch_size}
    bad = [f"{key}={value}" for key, value in sizes.items() if not isinstance(value, int) or value < 1]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: expected positive integers")
    if method.relevance.mode not in RELEVANCE_MODES:
        raise ConfigError(f"method.relevance.mode={method.relevance.mode}; expected one of {list(RELEVANCE_MODES)}")
    if method.relevance.mode == "cam" and cfg.model.classifier.get("head", "linear") != "linear":
        raise ConfigError("method.relevance.mode=cam needs model.classifier.head=linear (CAM is exact only for a "
                          "linear head); use method.relevance.mode=grad_cam or lrp with the mlp head")
    if not 0 <= float(method.held_out_tiles) < 1:
        raise ConfigError(f"method.held_out_tiles={method.held_out_tiles}; expected a fraction in [0, 1)")


def device_for(cfg: DictConfig) -> torch.device:
    """Where the per-image network stages (relevance, self-training) run: the GPU when the trainer uses one."""
    return torch_device(cfg.trainer.get("accelerator", "cpu"), key="trainer.accelerator")


class CyclicPipeline:
    """Cyclic's driver: the state its stages share and their configs and bodies; `CYCLIC_STAGES` declares the
    stages, `run` their order (with the stopping rule)."""

    def __init__(self, cfg: DictConfig) -> None:
        check_cyclic_config(cfg)
        self.cfg, self.method = cfg, cfg.method
        self.output_dir = Path(cfg.paths.output_dir)
        cache = cfg.paths.get("cache_dir") if self.method.cache else None
        self.cache_root = Path(cache) / "cyclic" if cache else None
        self.datamodule = self.build_datamodule()
        self.layout = self.datamodule.layout("train")
        self.ids = self.datamodule.ids("train")
        self.executor = hydra.utils.instantiate(cfg.executor) if cfg.get("executor") else LocalExecutor()
        self.read_image = TrainingImages(self.layout, self.datamodule.bit_depth, self.datamodule.stretch)
        self.graph = StageGraph(CYCLIC_STAGES, self, self.output_dir, self.cache_root)
        self.device = device_for(cfg)

    # ----- plumbing --------------------------------------------------------------------------------------------
    def build_datamodule(self, seed: int | None = None):
        """Detector crops (native px: `method.detector.crop`) and batches; no weak labels: the pseudo sets of the
        stages are the targets."""
        detector = self.method.detector
        stream_seed = {} if seed is None else {"seed": int(seed)}
        return hydra.utils.instantiate(self.cfg.data, weak_labels=None, crop=int(detector.crop),
                                       batch_size=int(detector.batch_size),
                                       augment=as_container(detector.augment) or {}, **stream_seed)

    def data_identity(self) -> dict:
        identity = {"root": str(self.layout.root), "dataset": self.layout.dataset, "split": self.layout.split,
                    "ids": self.ids}
        if self.datamodule.stretch is not None:
            identity["stretch_percentiles"] = list(self.datamodule.stretch)
        if self.datamodule.bit_depth is not None:
            identity["bit_depth"] = self.datamodule.bit_depth
        return identity

    def per_image(self, task, desc: str) -> dict:
        return dict(zip(self.ids, self.executor.map(task, self.ids, desc), strict=True))

    def build_networks(self):
        return hydra.utils.instantiate(self.cfg.model)

    def networks_of(self, trained: Stage, parts: tuple[str, ...] = ("classifier", "detector")):
        """Fresh networks with the weights of a training stage's last checkpoint (only `parts` of them)."""
        networks = self.build_networks()
        state = {k.removeprefix("net."): v for k, v in load_checkpoint_state(trained).items() if k.startswith("net.")}
        wanted = {k: v for k, v in state.items() if k.split(".", 1)[0] in parts}
        missing = [k for k in networks.state_dict() if k.split(".", 1)[0] in parts and k not in wanted]
        if missing:
            raise RuntimeError(f"{trained.key}: checkpoint lacks {len(missing)} weights of {parts} ({missing[:3]} ...)")
        networks.load_state_dict(wanted, strict=False)
        return networks

    def detector_module(self, networks):
        return hydra.utils.instantiate(self.method.module, net=networks)

    def stage_seed(self, stage: Stage, seed) -> int:
        value = stage_seed(int(seed), stage.key)
        pl.seed_everything(value, workers=True)  # before anything random is built: the networks' init included
        return value

    # ----- the whole run ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        loops, eps = int(self.method.loops), float(self.method.stop_eps)
        test = bool(self.cfg.get("test", True) and self.datamodule.splits.get("test"))
        every = bool(self.method.evaluate_every_loop)
        records, metrics, last = [], {}, 0
        for n in range(1, loops + 1):
            self.graph.get("detector", n)
            last = n
            change = self.graph.get("pseudo", n).summary.get("change")
            stop = should_stop(n, change, eps)
            if test and (every or n == loops or stop):
                metrics = self.graph.get("evaluate", n).summary["metrics"]
            records.append(self.loop_record(n, metrics if test and (every or n == loops or stop) else {}))
            self.log_loop(records[-1])
            if stop:
                log.info("loop %d: the pseudo set changed by %.4f < method.stop_eps=%s: stopping", n, change, eps)
                break
        if records[-1]["tile_accuracy"] is not None:  # image-level labels of held-out tiles: the sweep objective
            metrics = {**metrics, "val/tile_accuracy": float(records[-1]["tile_accuracy"])}
        if rank() == 0:
            write_json(self.output_dir / "loops.json", {"loops": records, "final_loop": last})
            update_run_record(self.output_dir, annotation_used=self.annotation_used())
            for name in METRIC_FILES if test else ():
                source = self.output_dir / f"evaluate_{last}" / name
                if source.is_file():
                    with atomic_path(self.output_dir / name) as tmp:
                        shutil.copyfile(source, tmp)
        return metrics

    def annotation_used(self) -> dict:
        """The image-level labels the run trained on, counted from its cached tile tables (training and held-out
        tiles): the generator's own cache would need the training masks, which a Cyclic run never reopens."""
        tiles_dir = self.graph.get("tiles", 0).dir
        rows: dict[str, list] = {}
        for tile in read_tile_table(tiles_dir / "train.csv") + read_tile_table(tiles_dir / "held_out.csv"):
            rows.setdefault(tile.image_id, []).append([tile.x, tile.y, tile.size, tile.label])
        return amount_of_targets("tiles", self.ids, {image_id: np.asarray(r) for image_id, r in rows.items()})

    def loop_record(self, n: int, metrics: dict) -> dict:
        """What loop n did: tile accuracy, pseudo-set size and change, self-training, test metrics (if run)."""
        classifier, pseudo = self.graph.get("classifier", n).summary, self.graph.get("pseudo", n).summary
        return {"loop": n, "tile_accuracy": classifier.get("held_out_accuracy"),
                "pseudo_instances": pseudo.get("instances"), "pseudo_change": pseudo.get("change"), **metrics}

    def log_loop(self, record: dict) -> None:
        """Per-loop figures into the run's loggers (CSV and W&B), step = loop."""
        if rank() != 0:
            return
        if not hasattr(self, "loop_loggers"):
            self.loop_loggers = build_loggers(self.cfg.get("logger"), save_dir=self.output_dir / "loops")
        values = {f"loop/{k}": float(v) for k, v in record.items() if isinstance(v, int | float) and k != "loop"}
        for logger in self.loop_loggers:
            logger.log_metrics(values, step=int(record["loop"]))
            logger.save()

    # ----- tiles: image-level labels -----------------------------------------------------------------------------
    def tiles_config(self, t: int) -> dict:
        return {"supervision": as_container(self.cfg.supervision), "held_out": float(self.method.held_out_tiles),
                "data": self.data_identity()}

    def _tiles(self, stage: Stage, inputs: dict) -> dict:
        supervision = self.cfg.supervision
        generator = hydra.utils.instantiate(supervision.generator)
        record = {}
        with profiled(record):
            tiles = [Tile(*row) for row in load_tiles(generator.prepare(self.layout, self.ids))]
            if supervision.balance:
                tiles = balance_tiles(tiles, int(supervision.seed), int(supervision.min_negatives))
            train, held = held_out_tiles(tiles, float(self.method.held_out_tiles), int(supervision.seed))
            write_tile_table(stage.dir / "train.csv", train)
            write_tile_table(stage.dir / "held_out.csv", held)
        return {"tiles": len(tiles), "positive": sum(t.label for t in tiles), "train": len(train),
                "held_out": len(held), "profile": per_image(record, len(self.ids))}

    # ----- classifier n ------------------------------------------------------------------------------------------
    def classifier_inputs(self, n: int) -> list[tuple[str, int]]:
        return [("tiles", 0)] + ([("detector", n - 1)] if n > 1 else [])

    def classifier_config(self, n: int) -> dict:
        return {"model": as_container(self.cfg.model), "classifier": as_container(self.method.classifier),
                "input_size": int(self.cfg.supervision.input_size), "precision": str(self.cfg.trainer.precision)}

    def _classifier(self, stage: Stage, inputs: dict) -> dict:
        settings = self.method.classifier
        last = stage.dir / "checkpoints" / LAST_NAME
        resume = str(last) if last.is_file() else None
        seed = self.stage_seed(stage, settings.seed)
        previous = inputs.get("detector")
        networks = self.networks_of(previous) if previous is not None else self.build_networks()
        if previous is not None:
            networks.detector_to_trunk()  # the cycle: the detector's body starts this loop's classifier
        module = hydra.utils.instantiate(settings.module, net=networks)
        tiles = inputs["tiles"].dir
        train, held = read_tile_table(tiles / "train.csv"), read_tile_table(tiles / "held_out.csv")
        images = {image_id: self.read_image(image_id) for image_id in progress(self.ids, "loading tiles' images")}
        datamodule = TileDataModule(images, train, held, int(self.cfg.supervision.input_size),
                                    int(settings.batch_size), seed, AugmentConfig(**as_container(settings.augment)),
                                    num_workers=int(self.cfg.data.get("num_workers", 0)))
        trainer = stage_trainer(self.cfg, stage.dir, int(settings.steps))
        record, accuracy = {}, None
        with profiled(record):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            if held:  # once, after training: the held-out tiles' accuracy (image-level labels, not masks)
                checker = build_trainer(self.cfg, [], [], default_root_dir=str(stage.dir), enable_checkpointing=False)
                result = checker.validate(module, datamodule=datamodule, verbose=False)
                accuracy = float(result[0]["val/tile_accuracy"])
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        return {"checkpoint": str(last), "steps": int(settings.steps), "global_step": int(trainer.global_step),
                "seed": seed, "held_out_accuracy": accuracy, "losses": losses, "profile": record}

    # ----- relevance n -------------------------------------------------------------------------------------------
    def relevance_config(self, n: int) -> dict:
        return {"relevance": as_container(self.method.relevance), "tile": int(self.cfg.supervision.tile),
                "input_size": int(self.cfg.supervision.input_size)}

    def _relevance(self, stage: Stage, inputs: dict) -> dict:
        classifier = self.networks_of(inputs["classifier"], ("classifier",)).classifier.to(self.device).eval()
        options = self.method.relevance
        scale = int(self.cfg.supervision.input_size) / int(self.cfg.supervision.tile)
        record = {}
        with profiled(record):
            for image_id in progress(self.ids, f"relevance maps (loop {stage.round})"):
                path = stage.dir / "maps" / f"{image_id}.npy"
                if path.is_file():
                    continue
                image = to_normalised_tensor(self.read_image(image_id)).to(self.device)
                relevance = relevance_map(classifier, image, scale, mode=options.mode, window=int(options.window),
                                          overlap=int(options.overlap), batch_size=int(options.batch_size))
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, relevance.astype(np.float16))
        return {"scale": scale, "profile": per_image(record, len(self.ids))}

    # ----- pseudo instances P_n ----------------------------------------------------------------------------------
    def pseudo_inputs(self, n: int) -> list[tuple[str, int]]:
        return [("relevance", n)] + ([("selftrain", n - 1), ("pseudo", n - 1)] if n > 1 else [])

    def pseudo_config(self, n: int) -> dict:
        return {"pseudo": as_container(self.method.pseudo), "dedup_iou": float(self.method.self_training.dedup_iou)}

    def _pseudo(self, stage: Stage, inputs: dict) -> dict:
        options = self.method.pseudo
        relevance = inputs["relevance"].dir / "maps"
        record = {}
        with profiled(record):
            area_ref = options.area_ref
            if area_ref == "dataset_median":  # pass 1: the median candidate area over every training image
                areas = self.per_image(functools.partial(candidate_area_task, relevance, options), "candidate areas")
                area_ref = reference_area([a for image_areas in areas.values() for a in image_areas], area_ref)
            elif area_ref != "image_median":
                area_ref = float(area_ref)
            detections = inputs["selftrain"].dir / "detections" if "selftrain" in inputs else None
            task = functools.partial(pseudo_task, relevance, detections, stage.dir, options, area_ref,
                                     float(self.method.self_training.dedup_iou))
            counts = self.per_image(task, f"pseudo instances (loop {stage.round})")
        summary = {"area_ref": area_ref if isinstance(area_ref, str) else float(area_ref), "images": counts, "instances": int(sum(c["instances"] for c in counts.values())),
                   "relevance_instances": int(sum(c["relevance"] for c in counts.values())),
                   "profile": per_image(record, len(self.ids))}
        if "pseudo" in inputs:
            previous = inputs["pseudo"].dir / "labels"
            summary["change"] = set_change([read_label(stage.dir / "labels" / f"{i}.png") for i in self.ids],
                                           [read_label(previous / f"{i}.png") for i in self.ids])
        return summary

    # ----- detector n --------------------------------------------------------------------------------------------
    def detector_inputs(self, n: int) -> list[tuple[str, int]]:
        return [("pseudo", n), ("classifier", n)]

    def detector_config(self, n: int) -> dict:
        return {"model": as_container(self.cfg.model), "detector": as_container(self.method.detector),
                "module": as_container(self.method.module), "warm_start": bool(self.method.detector_warm_start),
                "precision": str(self.cfg.trainer.precision)}

    def _detector(self, stage: Stage, inputs: dict) -> dict:
        settings = self.method.detector
        last = stage.dir / "checkpoints" / LAST_NAME
        resume = str(last) if last.is_file() else None
        seed = self.stage_seed(stage, settings.seed)
        # loop n's classifier checkpoint carries detector n-1 (its heads warm-start this one) and the new trunk
        parts = ("classifier", "detector") if self.method.detector_warm_start and stage.round > 1 else ("classifier",)
        networks = self.networks_of(inputs["classifier"], parts)
        networks.trunk_to_detector()
        module = self.detector_module(networks)
        datamodule = self.build_datamodule(seed)
        labels = inputs["pseudo"].dir / "labels"
        datamodule.use_target_files({i: labels / f"{i}.png" for i in self.ids})
        datamodule.configure_targets(instance_target, IGNORE_INSTANCE)
        trainer = stage_trainer(self.cfg, stage.dir, int(settings.max_steps), recipe=build_recipe(self.cfg),
                                gradient_clip_val=float(settings.clip_grad))
        record = {}
        with profiled(record):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        return {"checkpoint": str(last), "max_steps": int(settings.max_steps), "global_step": int(trainer.global_step),
                "seed": seed, "losses": losses, "profile": record}

    def trained_detector(self, trained: Stage):
        return self.detector_module(self.networks_of(trained)).to(self.device).eval()

    # ----- self-training n ---------------------------------------------------------------------------------------
    def selftrain_config(self, n: int) -> dict:
        return {"self_training": as_container(self.method.self_training),
                "inference": as_container(self.method.module.inference)}

    def _selftrain(self, stage: Stage, inputs: dict) -> dict:
        module = self.trained_detector(inputs["detector"])
        options = self.method.self_training
        # only confident detections are kept: skipping the others saves most of the time and leaves them as they
        # were, but for pixels stitching gave to a lower-scoring detection of a neighbouring tile
        module.set_min_score(max(module.min_score, float(options.min_score)))
        counts, record = {}, {}
        with profiled(record):
            for image_id in progress(self.ids, f"self-training detections (loop {stage.round})"):
                path = stage.dir / "detections" / f"{image_id}.png"
                if not path.is_file():
                    image = to_normalised_tensor(self.read_image(image_id))
                    instances, scores = module.predict_scored_instances(image)
                    cap = instances_per_image(*instances.shape, float(options.max_per_mpx))
                    write_label(path, confident_instances(instances, scores, float(options.min_score), cap))
                counts[image_id] = int(read_label(path).max())
        return {"images": counts, "detections": int(sum(counts.values())), "profile": per_image(record, len(self.ids))}

    # ----- evaluation --------------------------------------------------------------------------------------------
    def evaluate_config(self, n: int) -> dict:
        return {"inference": as_container(self.method.module.inference),
                "test": {"root": str(self.datamodule.layout("test").dir), "ids": self.datamodule.ids("test")}}

    def _evaluate(self, stage: Stage, inputs: dict) -> dict:
        trained, test_ids = inputs["detector"], self.datamodule.ids("test")
        eval_cfg = copy.deepcopy(self.cfg)
        with open_dict(eval_cfg):
            eval_cfg.paths.output_dir = str(stage.dir)
        trainer = build_trainer(self.cfg, [], [], enable_checkpointing=False, default_root_dir=str(stage.dir),
                                max_steps=-1)
        record = {}
        with profiled(record):
            metrics = predict_and_evaluate(eval_cfg, trainer, self.detector_module(self.networks_of(trained)),
                                           self.datamodule, ckpt_path=None)
        return {"metrics": metrics, "profile": per_image(record, len(test_ids))}


def trained_detector_of_loop(driver: CyclicPipeline, n: int) -> list[tuple[str, int]]:
    return [("detector", n)]


# Cyclic's stages (docs/methods/cyclic.md#run-folder): per-image ones run on rank 0 under DDP, the others on every rank.
CYCLIC_STAGES = (
    StageSpec("tiles", CyclicPipeline.tiles_config, CyclicPipeline._tiles, cacheable=always),
    StageSpec("classifier", CyclicPipeline.classifier_config, CyclicPipeline._classifier,
              inputs=CyclicPipeline.classifier_inputs, collective=True),
    StageSpec("relevance", CyclicPipeline.relevance_config, CyclicPipeline._relevance,
              inputs=lambda driver, n: [("classifier", n)]),
    StageSpec("pseudo", CyclicPipeline.pseudo_config, CyclicPipeline._pseudo, inputs=CyclicPipeline.pseudo_inputs),
    StageSpec("detector", CyclicPipeline.detector_config, CyclicPipeline._detector,
              inputs=CyclicPipeline.detector_inputs, collective=True),
    StageSpec("selftrain", CyclicPipeline.selftrain_config, CyclicPipeline._selftrain,
              inputs=trained_detector_of_loop),
    StageSpec("evaluate", CyclicPipeline.evaluate_config, CyclicPipeline._evaluate, inputs=trained_detector_of_loop,
              collective=True),
)


# ----------------------------------------------------------------------------------------------- per-image tasks
def load_relevance(folder: Path, image_id: str) -> np.ndarray:
    return np.load(folder / f"{image_id}.npy").astype(np.float32)


def candidate_options(options: DictConfig) -> dict:
    """The keyword arguments of `candidate_areas` from `method.pseudo`."""
    return {"tau": float(options.tau), "split": options.split, "min_distance": options.get("min_distance"),
            "min_area": int(options.min_area), "max_area": int(options.max_area),
            "min_solidity": float(options.min_solidity), "exclude_border": bool(options.exclude_border)}


def extraction_options(options: DictConfig) -> dict:
    """The keyword arguments of `extract_pseudo_instances` from `method.pseudo` (area_ref and k set per call)."""
    return {**candidate_options(options), "ignore_unselected": bool(options.ignore_unselected),
            "ignore_dilate": int(options.ignore_dilate), "rank_descending": bool(options.faithful_rank_descending)}


def candidate_area_task(relevance_dir: Path, options: DictConfig, image_id: str) -> list[float]:
    """Areas of the filtered relevance components of one image (for the dataset-median reference area)."""
    return [float(a) for a in candidate_areas(load_relevance(relevance_dir, image_id), **candidate_options(options))]


def pseudo_task(relevance_dir: Path, detections_dir: Path | None, folder: Path, options: DictConfig, area_ref,
                dedup_iou: float, image_id: str) -> dict:
    """P_n of one image -> `<folder>/instances/<id>.png` (relevance instances) and `<folder>/labels/<id>.png`:
    loop n-1's confident detections (`detections_dir`) first, then the relevance instances. `area_ref`: a number
    of px (the dataset median resolved by the stage) or "image_median"."""
    label_path = folder / "labels" / f"{image_id}.png"
    instances_path = folder / "instances" / f"{image_id}.png"
    if not label_path.is_file():
        relevance = load_relevance(relevance_dir, image_id)
        k = instances_per_image(*relevance.shape, float(options.k_per_mpx))
        instances, _ = extract_pseudo_instances(relevance, area_ref=area_ref, k=k, **extraction_options(options))
        write_label(instances_path, instances)
        label = instances
        if detections_dir is not None:
            detections = detection_masks(read_label(detections_dir / f"{image_id}.png"))
            label = next_pseudo_set(detections, instances, dedup_iou, int(options.min_area))
        write_label(label_path, label)
    label, instances = read_label(label_path), read_label(instances_path)
    return {"instances": count_instances(label), "relevance": count_instances(instances),
            "ignore_fraction": float((label == IGNORE_INSTANCE).mean())}


def count_instances(label: np.ndarray) -> int:
    ids = np.unique(label)
    return int(((ids > 0) & (ids != IGNORE_INSTANCE)).sum())


def detection_masks(detections: np.ndarray) -> list[np.ndarray]:
    """The masks of a `selftrain` map, in its id order (= descending detection score)."""
    return [detections == i for i in range(1, int(detections.max()) + 1) if (detections == i).any()]


def confident_instances(instances: np.ndarray, scores: dict[int, float], min_score: float, cap: int) -> np.ndarray:
    """uint16 map of the detections scoring >= `min_score`, at most `cap`, ids 1..K in descending score."""
    ranked = sorted((i for i, s in scores.items() if s >= min_score), key=lambda i: -scores[i])[:cap]
    lut = np.zeros(int(instances.max()) + 1, dtype=np.uint16)
    lut[ranked] = np.arange(1, len(ranked) + 1, dtype=np.uint16)
    return lut[instances]
