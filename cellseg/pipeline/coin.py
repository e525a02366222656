"""COIN driver (docs/methods/coin.md#run-folder): `method=coin` runs every stage in order, resumable stage by stage.

    ucis_0/       U per training image (classical recipe or a folder of SSA/PSM predictions)
    propagate_0/  stats.json (handcrafted z-scores), prototype.json (global mu_fg), masks/<id>.png = S
    pseudo_0/     instances/ (A4 of S), prompts/, scores/, labels/<id>.png = P_0 (uint16, 65535 ignore)
    train_r/      checkpoints/last.ckpt (EMA weights) of round r, trained on P_{r-1}        r = 1..rounds
    predict_r/    A7 + A4 instances of the training images (r < rounds)
    pseudo_r/     re-scored -> P_r (optionally accumulated with P_{r-1})
    evaluate_r/   test-split predictions and metrics.json (the last round; every round with
                  method.evaluate_every_round); metrics.json is also copied to the run folder.

The stages are data (`COIN_STAGES`, their order `coin_plan`) run by the generic `StageGraph`
(docs/framework.md#pipeline-stages); per-image work goes through the run's executor (`executor` group).
The stages' algorithms are the objects of `method.ucis`, `method.features` and `method.prompter`, built from their
`_target_` (`build_coin_parts`); `method.module` is the LightningModule node, which also holds the A4 options
(`module.instances`) and the inference options (`module.inference`) the driver's stages read.

The training labels are never opened: the data module is built without weak labels and every training-image
loader is made with `with_labels=False`. Nothing in the pipeline selects with ground truth (last EMA weights).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, open_dict

from cellseg.callbacks.ema_weights import EmaWeights
from cellseg.callbacks.inference_recipe import build_recipe
from cellseg.callbacks.last_checkpoint import LAST_NAME
from cellseg.data.weak.pseudo_instances import merge_instance_sets
from cellseg.methods.coin.prompter import load_prompts, save_prompts
from cellseg.methods.coin.prototypes import PrototypeAccumulator, add_foreground, image_heatmaps
from cellseg.methods.coin.refine import CRF_MISSING, propagate_mask
from cellseg.methods.coin.scoring import instance_scores, paint_pseudo_label, thresholds_for
from cellseg.methods.coin.ucis import check_stain
from cellseg.methods.coin.vit_features import WindowTokens
from cellseg.pipeline.checks import check_supervision
from cellseg.pipeline.common import TrainingImages, as_container, load_checkpoint_state, per_image, stage_seed
from cellseg.pipeline.distributed import rank
from cellseg.pipeline.engine import StageGraph, StageSpec, always
from cellseg.pipeline.evaluate import predict_and_evaluate
from cellseg.pipeline.executors import LocalExecutor, progress
from cellseg.pipeline.profiling import profiled
from cellseg.pipeline.stage import Stage, read_json
from cellseg.pipeline.trainer import build_trainer, stage_trainer
from cellseg.postproc.instances import binary_to_instances
from cellseg.utils.io import atomic_path, read_label, write_json, write_label, write_mask_uint8

log = logging.getLogger(__name__)

METRIC_FILES = ("metrics.json", "per_image.csv")
# method.label_free_score: mean agreement of the final student's instances with the point-prompted segmenter
LABEL_FREE_AGREEMENT = "label_free/prompt_agreement"


def run_coin(cfg: DictConfig) -> dict:
    """`method.runner` of method=coin: all stages, then the test metrics of the final model."""
    return CoinPipeline(cfg).run()


def check_coin_config(cfg: DictConfig) -> CoinParts:
    """Fail before any work on settings that cannot run; returns the sub-group objects (`build_coin_parts`, whose
    constructors check their own arguments: missing weights, a UCIS folder without `dir` ...)."""
    check_supervision(cfg)
    if not cfg.get("train", True):
        raise ValueError("method=coin runs its whole pipeline (finished stages are reused): train=false is not "
                         "supported; score a round's checkpoint with infer.py and eval.py")
    method = cfg.method
    if int(method.rounds) < 0:
        raise ValueError(f"method.rounds={method.rounds}; expected >= 0")
    check_stain(method.stain)
    sizes = {key: method.train[key] for key in ("crop", "batch_size", "repeat", "epochs")}
    if method.train.max_steps != "auto":
        sizes["max_steps"] = method.train.max_steps
    bad = [f"method.train.{key}={value}" for key, value in sizes.items() if not isinstance(value, int) or value < 1]
    if bad:
        raise ValueError(f"{', '.join(bad)}: expected positive integers")
    if method.train.ckpt != "last":
        raise ValueError(f"method.train.ckpt={method.train.ckpt}: only `last` (EMA) is supported; "
                         "selecting a checkpoint would need ground truth")
    parts = build_coin_parts(method)
    if method.refine.crf.enabled or method.module.inference.crf.enabled:
        try:
            import pydensecrf.densecrf  # noqa: F401
        except ImportError as err:
            raise ImportError(CRF_MISSING) from err
    return parts


@dataclass
class CoinParts:
    """The objects of the three sub-groups: `ucis(image, id)`, the feature source, `prompter(image, instances)`."""

    ucis: object
    features: object
    prompter: object


PART_KEYS = ("ucis", "features", "prompter")


def build_coin_part(method: DictConfig, key: str):
    """`hydra.utils.instantiate(method.<key>)`; `method.stain` goes to the targets whose constructor takes a
    `stain` (the classical UCIS, the handcrafted features, the classical prompter). Constructors only check and
    keep their arguments: weights are read on first use."""
    node = method[key]
    takes_stain = "stain" in inspect.signature(hydra.utils.get_object(node._target_)).parameters
    return hydra.utils.instantiate(node, **({"stain": method.stain} if takes_stain else {}))


def build_coin_parts(method: DictConfig) -> CoinParts:
    """The three sub-group objects; the refusals of their constructors come in one error (experiment=
    coin_paper_monuseg leaves several paths null)."""
    parts, errors = {}, []
    for key in PART_KEYS:
        try:
            parts[key] = build_coin_part(method, key)
        except InstantiationException as err:
            if not isinstance(err.__cause__, ValueError):
                raise
            errors.append(str(err.__cause__))
    if errors:
        raise ValueError("\n".join(errors))
    return CoinParts(**parts)


def max_steps_for(train: DictConfig, n_images: int) -> int:
    """`train.max_steps: auto` = epochs * floor(repeat * N / batch) (at least 1)."""
    if train.max_steps != "auto":
        return int(train.max_steps)
    return max(1, int(train.epochs) * math.floor(int(train.repeat) * n_images / int(train.batch_size)))



class CoinPipeline:
    """COIN's driver: the state its stages share (config, parts, data, executor) and their configs and bodies;
    `COIN_STAGES` declares the stages, `coin_plan` their order, `StageGraph` runs them. Asking for one stage
    builds its inputs first, so `pseudo_labels(0)` alone runs stages 0-2."""

    def __init__(self, cfg: DictConfig) -> None:
        self.parts = check_coin_config(cfg)
        self.cfg, self.method = cfg, cfg.method
        self.output_dir = Path(cfg.paths.output_dir)
        cache = cfg.paths.get("cache_dir") if self.method.cache else None
        self.cache_root = Path(cache) / "coin" if cache else None
        self.datamodule = self.build_datamodule()
        self.layout = self.datamodule.layout("train")
        self.ids = self.datamodule.ids("train")
        self.profile_memory = bool(self.method.profile_memory)
        self.executor = hydra.utils.instantiate(cfg.executor) if cfg.get("executor") else LocalExecutor()
        self.read_image = TrainingImages(self.layout, self.datamodule.bit_depth, self.datamodule.stretch)
        self.graph = StageGraph(COIN_STAGES, self, self.output_dir, self.cache_root)

    # ----- plumbing --------------------------------------------------------------------------------------------
    def build_datamodule(self, seed: int | None = None):
        """Training crops and batches sized by method.train; no weak labels (annotation-free)."""
        train = self.method.train
        stream_seed = {} if seed is None else {"seed": int(seed)}
        return hydra.utils.instantiate(self.cfg.data, weak_labels=None, crop=int(train.crop),
                                       batch_size=int(train.batch_size), crops_per_image=int(train.repeat),
                                       augment=as_container(train.augment) or {}, **stream_seed)

    def data_identity(self) -> dict:
        identity = {"root": str(self.layout.root), "dataset": self.layout.dataset, "split": self.layout.split,
                    "ids": self.ids}
        if self.datamodule.stretch is not None:  # only when set: unstretched stage hashes stay as they were
            identity["stretch_percentiles"] = list(self.datamodule.stretch)
        if self.datamodule.bit_depth is not None:  # likewise: auto (null) keeps the hashes of earlier runs
            identity["bit_depth"] = self.datamodule.bit_depth
        return identity

    def progress(self, desc: str):
        return progress(self.ids, desc)

    def per_image(self, task, desc: str) -> dict:
        """{image id: task(image id)} through the run's executor (in order, whichever process ran them)."""
        return dict(zip(self.ids, self.executor.map(task, self.ids, desc), strict=True))

    # ----- the whole run ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        rounds = int(self.method.rounds)
        test = bool(self.cfg.get("test", True) and self.datamodule.splits.get("test"))
        label_free = bool(self.method.label_free_score)
        stages = self.graph.run(coin_plan(rounds, test, bool(self.method.evaluate_every_round), label_free))
        metrics = dict(stages[-1].summary["metrics"]) if stages[-1].name == "evaluate" else {}
        if label_free:  # the final student's instances scored like pseudo labels: no label involved
            metrics[LABEL_FREE_AGREEMENT] = self.graph.get("pseudo", rounds).summary["mean_score"]
        if stages[-1].name == "evaluate" and rank() == 0:
            for name in METRIC_FILES:
                source = self.output_dir / f"evaluate_{rounds}" / name
                if source.is_file():
                    with atomic_path(self.output_dir / name) as tmp:
                        shutil.copyfile(source, tmp)
        return metrics

    # ----- the stages, by name (each builds its inputs first) ----------------------------------------------------
    def ucis(self) -> Stage:
        return self.graph.get("ucis", 0)

    def propagate(self) -> Stage:
        return self.graph.get("propagate", 0)

    def pseudo_labels(self, round_: int) -> Stage:
        return self.graph.get("pseudo", round_)

    def train_round(self, round_: int) -> Stage:
        return self.graph.get("train", round_)

    def predict_train(self, round_: int) -> Stage:
        return self.graph.get("predict", round_)

    def evaluate(self, round_: int) -> dict:
        return self.graph.get("evaluate", round_).summary["metrics"]

    # ----- stage 0: UCIS ---------------------------------------------------------------------------------------
    def ucis_config(self, t: int) -> dict:
        return {"ucis": as_container(self.method.ucis), "stain": self.method.stain, "data": self.data_identity()}

    def _ucis(self, stage: Stage, inputs: dict) -> dict:
        record = {}
        with profiled(record, self.profile_memory):
            counts = self.per_image(functools.partial(ucis_task, self.read_image, self.parts.ucis, stage.dir), "UCIS")
        return {"instances": counts, "profile": per_image(record, len(self.ids))}

    # ----- stage 1: propagation --------------------------------------------------------------------------------
    def propagate_config(self, t: int) -> dict:
        return {"features": as_container(self.method.features), "refine": as_container(self.method.refine),
                "stain": self.method.stain}

    def _propagate(self, stage: Stage, inputs: dict) -> dict:
        upstream = inputs["ucis"]
        record = {}
        with profiled(record, self.profile_memory):
            if not self.method.refine.enabled:  # S = U > 0 (no features, no transport), for sources that hurt
                task = functools.partial(copy_foreground_task, upstream.dir, stage.dir)
                self.per_image(task, "propagation off (S = U > 0)")
            else:
                source = self.feature_source(stage, upstream)
                mu_fg = load_prototype(stage.dir) if self.method.refine.accumulate_centroids else None
                task = functools.partial(propagate_task, self.read_image, source, mu_fg, self.method.refine,
                                         upstream.dir, stage.dir)
                self.per_image(task, "propagation (pass 2)")
        return {"profile": per_image(record, len(self.ids))}

    def feature_source(self, stage: Stage, upstream: Stage):
        """Pass 0 (feature statistics, handcrafted only) and pass 1 (global foreground prototype)."""
        source = self.parts.features
        stats_path = stage.dir / "stats.json"
        if source.needs_stats:
            if stats_path.is_file():
                source.load_state_dict(read_json(stats_path))
            else:
                for image_id in self.progress("feature statistics (pass 0)"):
                    source.update_stats(self.read_image(image_id))
                write_json(stats_path, source.state_dict())
        if self.method.refine.accumulate_centroids and not (stage.dir / "prototype.json").is_file():
            accumulator = PrototypeAccumulator(source.dim)
            for image_id in self.progress("foreground prototype (pass 1)"):
                features = source.image_features(self.read_image(image_id))
                add_foreground(features, read_label(upstream.dir / f"{image_id}.png"), accumulator)
                if source.cache_tokens and features.tokens is not None:
                    with atomic_path(stage.dir / "tokens" / f"{image_id}.pt") as tmp:
                        torch.save([t.state() for t in features.tokens], tmp)
            write_json(stage.dir / "prototype.json", accumulator.state_dict())
        return source

    # ----- stage 2: pseudo-labels P_t: instances (S -> A4 at t = 0, network predictions later), prompts, scores,
    # threshold, optionally merged with P_{t-1} ------------------------------------------------------------------
    def accumulates(self, t: int) -> bool:
        return t > 0 and bool(self.method.accumulate_confident)

    def pseudo_inputs(self, t: int) -> list[tuple[str, int]]:
        if t == 0:
            return [("propagate", 0)]
        return [("predict", t)] + ([("pseudo", t - 1)] if self.accumulates(t) else [])

    def pseudo_config(self, t: int) -> dict:
        return {"instances": as_container(self.method.module.instances),
                "prompter": as_container(self.method.prompter), "scoring": as_container(self.method.scoring),
                "accumulate": self.accumulates(t), "stain": self.method.stain}

    def _pseudo_labels(self, stage: Stage, inputs: dict) -> dict:
        upstream = inputs["propagate"] if stage.round == 0 else inputs["predict"]
        previous = inputs.get("pseudo")  # P_{t-1}, with accumulation only
        record = {}
        with profiled(record, self.profile_memory):
            # pass (a): per image, instance map, prompted masks and scores (files reused when already written)
            decode = as_container(self.method.module.instances) if stage.round == 0 else None
            task = functools.partial(score_task, self.read_image, self.parts.prompter, decode, upstream.dir,
                                     stage.dir)
            scores = self.per_image(task, f"prompts and scores (round {stage.round})")
            scoring = self.method.scoring
            thetas = thresholds_for(scores, strategy=scoring.strategy, cap=scoring.cap, value=scoring.threshold,
                                    threshold_scope=scoring.threshold_scope)
            summary = self.paint_labels(stage, scores, thetas, previous)
        return {**summary, "profile": per_image(record, len(self.ids))}

    def paint_labels(self, stage: Stage, scores: dict, thetas: dict, previous: Stage | None) -> dict:
        """Pass (b): P per image from the threshold of its scope; merged with P_{t-1} when `previous` is given."""
        per_image_summary = {}
        for image_id in self.progress(f"pseudo labels (round {stage.round})"):
            instances = read_label(stage.dir / "instances" / f"{image_id}.png")
            prompts = load_prompts(stage.dir / "prompts" / f"{image_id}.npz")
            label = paint_pseudo_label(instances.shape, instances, prompts, scores[image_id], thetas[image_id],
                                       paint=self.method.scoring.paint)
            if previous is not None:
                label = merge_instance_sets(read_label(previous.dir / "labels" / f"{image_id}.png"), label)
            write_label(stage.dir / "labels" / f"{image_id}.png", label)
            accepted = int(sum(s > thetas[image_id] for s in scores[image_id].values()))
            per_image_summary[image_id] = {"instances": len(scores[image_id]), "accepted": accepted,
                                           "theta": thetas[image_id] if math.isfinite(thetas[image_id]) else None}
        total = sum(v["instances"] for v in per_image_summary.values())
        accepted = sum(v["accepted"] for v in per_image_summary.values())
        all_scores = [s for image_scores in scores.values() for s in image_scores.values()]
        return {"images": per_image_summary, "instances": total, "accepted": accepted,
                "accepted_fraction": accepted / total if total else 0.0,
                "mean_score": float(np.mean(all_scores)) if all_scores else 0.0}

    # ----- stage 3: round t trains a fresh network (or round t-1's EMA weights, warm_start) on P_{t-1} ------------
    def warm_starts(self, t: int) -> bool:
        return bool(self.method.warm_start) and t > 1

    def train_inputs(self, t: int) -> list[tuple[str, int]]:
        return [("pseudo", t - 1)] + ([("train", t - 1)] if self.warm_starts(t) else [])

    def train_config(self, t: int) -> dict:
        return {"model": as_container(self.cfg.model), "train": as_container(self.method.train),
                "module": as_container(self.method.module), "precision": str(self.cfg.trainer.precision),
                "warm_start": self.warm_starts(t)}

    def _train(self, stage: Stage, inputs: dict) -> dict:
        targets, previous = inputs["pseudo"], inputs.get("train")
        last = stage.dir / "checkpoints" / LAST_NAME
        resume = str(last) if last.is_file() else None
        seed = stage_seed(int(self.method.train.seed), stage.key)
        pl.seed_everything(seed, workers=True)  # before anything random is built: the network's init included
        datamodule = self.build_datamodule(seed)
        datamodule.use_target_files({i: targets.dir / "labels" / f"{i}.png" for i in self.ids})
        module = self.build_module()
        if previous is not None and resume is None:
            module.load_state_dict(load_checkpoint_state(previous))
        datamodule.configure_targets(module.train_target, module.ignore_index)
        steps = max_steps_for(self.method.train, len(self.ids))
        trainer = self.build_trainer(stage.dir, steps)
        record = {}
        with profiled(record):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        return {"checkpoint": str(last), "max_steps": steps, "global_step": int(trainer.global_step),
                "seed": seed, "losses": losses, "profile": record}

    def build_module(self):
        net = hydra.utils.instantiate(self.cfg.model)
        return hydra.utils.instantiate(self.method.module, net=net)

    def trained_module(self, trained: Stage):
        """A round's module with the EMA weights of its last checkpoint."""
        module = self.build_module()
        module.load_state_dict(load_checkpoint_state(trained))
        return module

    def build_trainer(self, root: Path, max_steps: int) -> pl.Trainer:
        """The round's trainer: the run's loggers and callbacks writing under the stage folder (last.ckpt every
        callbacks.last_checkpoint.every_n_train_steps steps), EMA weights, no validation, no checkpoint selection."""
        train = self.method.train
        return stage_trainer(self.cfg, root, max_steps, extra=[EmaWeights(float(train.ema_decay), bool(train.ema_warmup))],
                             recipe=build_recipe(self.cfg))

    # ----- predictions of round t's network: the training images (-> P_t) and the test split ------------------
    def predict_config(self, t: int) -> dict:
        return {"inference": as_container(self.method.module.inference),
                "instances": as_container(self.method.module.instances)}

    def _predict_train(self, stage: Stage, inputs: dict) -> dict:
        record = {}
        with profiled(record):
            self.predict_split(inputs["train"], "train", stage.dir)
        return {"profile": per_image(record, len(self.ids))}

    def predict_split(self, trained: Stage, role: str, folder: Path) -> None:
        """A7 + A4 instance maps of a split's images (labels never read) with the EMA weights."""
        from cellseg.inference.prediction_writer import InstanceMapWriter

        trainer = self.inference_trainer(folder)
        trainer.callbacks.append(InstanceMapWriter(folder))
        loader = self.datamodule.predict_dataloader_for(role, with_labels=False)
        trainer.predict(self.trained_module(trained), dataloaders=loader, return_predictions=False)

    def inference_trainer(self, root: Path) -> pl.Trainer:
        return build_trainer(self.cfg, [], [], enable_checkpointing=False, default_root_dir=str(root), max_steps=-1)

    def evaluate_config(self, t: int) -> dict:
        return {**self.predict_config(t),
                "test": {"root": str(self.datamodule.layout("test").dir), "ids": self.datamodule.ids("test")}}

    def _evaluate(self, stage: Stage, inputs: dict) -> dict:
        """Test-split predictions and metrics (predict_and_evaluate, as the other methods)."""
        trained = inputs["train"]
        test_ids = self.datamodule.ids("test")
        eval_cfg = copy.deepcopy(self.cfg)
        with open_dict(eval_cfg):
            eval_cfg.paths.output_dir = str(stage.dir)
        record = {}
        with profiled(record):
            metrics = predict_and_evaluate(eval_cfg, self.inference_trainer(stage.dir), self.trained_module(trained),
                                           self.datamodule, ckpt_path=None)
        return {"metrics": metrics, "profile": per_image(record, len(test_ids))}


def trained_round(driver: CoinPipeline, t: int) -> list[tuple[str, int]]:
    return [("train", t)]


# COIN's stages (docs/methods/coin.md#run-folder): per-image ones run on rank 0 under DDP, the others on every rank.
COIN_STAGES = (
    StageSpec("ucis", CoinPipeline.ucis_config, CoinPipeline._ucis, cacheable=always),
    StageSpec("propagate", CoinPipeline.propagate_config, CoinPipeline._propagate,
              inputs=lambda driver, t: [("ucis", 0)], cacheable=always),
    StageSpec("pseudo", CoinPipeline.pseudo_config, CoinPipeline._pseudo_labels, inputs=CoinPipeline.pseudo_inputs,
              cacheable=lambda t: t == 0),
    StageSpec("train", CoinPipeline.train_config, CoinPipeline._train, inputs=CoinPipeline.train_inputs,
              collective=True),
    StageSpec("predict", CoinPipeline.predict_config, CoinPipeline._predict_train, inputs=trained_round,
              collective=True),
    StageSpec("evaluate", CoinPipeline.evaluate_config, CoinPipeline._evaluate, inputs=trained_round,
              collective=True),
)


def coin_plan(rounds: int, test: bool, evaluate_every_round: bool, label_free_score: bool = False
              ) -> list[tuple[str, int]]:
    """The order of COIN's stages: P_0, then per round t: train_t, P_t (but the last, unless `label_free_score`
    scores the final student too), evaluate_t (the last round, or every round with `method.evaluate_every_round`,
    when there is a test split)."""
    plan = [("pseudo", 0)]
    for t in range(1, rounds + 1):
        plan.append(("train", t))
        if t < rounds or label_free_score:
            plan.append(("pseudo", t))
        if test and (t == rounds or evaluate_every_round):
            plan.append(("evaluate", t))
    return plan


# ----------------------------------------------------------------------------------------------- helpers
def ucis_instances(ucis, image: np.ndarray, image_id: str) -> np.ndarray:
    """U of one image from the `method.ucis` object (a module-level hook, so tests can count calls)."""
    return ucis(image, image_id)


def score_image_prompts(prompter, image: np.ndarray, instances: np.ndarray):
    """The prompter's masks of one image (a module-level hook, so tests can count or interrupt calls)."""
    return prompter(image, instances)


# Per-image tasks (docs/framework.md#per-image-stages): module-level, bound with functools.partial, each writes
# its files atomically and skips an image whose output already exists (resume).
def ucis_task(read_image: TrainingImages, ucis, folder: Path, image_id: str) -> int:
    """U of one image -> `<folder>/<id>.png`; returns its number of instances."""
    path = folder / f"{image_id}.png"
    if not path.is_file():
        write_label(path, ucis_instances(ucis, read_image(image_id), image_id))
    return int(read_label(path).max())


def copy_foreground_task(ucis_dir: Path, folder: Path, image_id: str) -> None:
    """`refine.enabled=false`: S = U > 0."""
    path = folder / "masks" / f"{image_id}.png"
    if not path.is_file():
        write_mask_uint8(path, (read_label(ucis_dir / f"{image_id}.png") > 0).astype(np.uint8) * 255)


def propagate_task(read_image: TrainingImages, source, mu_fg: np.ndarray | None, refine: DictConfig,
                   ucis_dir: Path, folder: Path, image_id: str) -> None:
    """S of one image from its U and the trained feature source -> `<folder>/masks/<id>.png`."""
    path = folder / "masks" / f"{image_id}.png"
    if path.is_file():
        return
    image, ucis = read_image(image_id), read_label(ucis_dir / f"{image_id}.png")
    mask = propagate_image(source, mu_fg, refine, image, ucis, cached_tokens(folder, image_id))
    write_mask_uint8(path, mask.astype(np.uint8) * 255)


def cached_tokens(folder: Path, image_id: str) -> list[WindowTokens] | None:
    path = folder / "tokens" / f"{image_id}.pt"
    if not path.is_file():
        return None
    return [WindowTokens.from_state(s) for s in torch.load(path, weights_only=True)]


def score_task(read_image: TrainingImages, prompter, decode: dict | None, upstream_dir: Path, folder: Path,
               image_id: str) -> dict[int, float]:
    """Instances of one image (round 0: `decode` = the A4 options applied to the mask S in `<upstream>/masks/`;
    later rounds, decode=None: the network's instance map `<upstream>/<id>.png`), its prompted masks and their
    scores -> `<folder>/{instances,prompts,scores}/`; returns the scores."""
    score_path = folder / "scores" / f"{image_id}.json"
    if score_path.is_file():
        return {int(k): float(v) for k, v in read_json(score_path)["scores"].items()}
    if decode is not None:
        instances = binary_to_instances(read_label(upstream_dir / "masks" / f"{image_id}.png") > 0, **decode)
    else:
        instances = read_label(upstream_dir / f"{image_id}.png")
    prompts = score_image_prompts(prompter, read_image(image_id), instances)
    scores = instance_scores(instances, prompts)
    write_label(folder / "instances" / f"{image_id}.png", instances)
    save_prompts(folder / "prompts" / f"{image_id}.npz", prompts)
    write_json(score_path, {"scores": {str(k): v for k, v in scores.items()}})
    return scores


def load_prototype(stage_dir: Path) -> np.ndarray:
    return PrototypeAccumulator.from_state_dict(read_json(Path(stage_dir) / "prototype.json")).mean


def propagation_model(cfg: DictConfig, propagate_dir: str | Path):
    """(feature source, mu_fg) of a finished propagation stage, to propagate other images (diagnostics);
    mu_fg is None with refine.accumulate_centroids=false (per-image foreground prototypes)."""
    source = build_coin_part(cfg.method, "features")
    stats = read_json(Path(propagate_dir) / "stats.json")
    if source.needs_stats:
        if stats is None:
            raise FileNotFoundError(f"{propagate_dir}/stats.json not found: the propagation stage did not finish")
        source.load_state_dict(stats)
    if not cfg.method.refine.accumulate_centroids:
        return source, None
    return source, load_prototype(Path(propagate_dir))


def propagate_image(source, mu_fg: np.ndarray | None, refine: DictConfig, image: np.ndarray, ucis: np.ndarray,
                    tokens: list[WindowTokens] | None = None) -> np.ndarray:
    """S of one image with a trained propagation model (the per-image bg prototype comes from its own U);
    `tokens`: the image's ViT tokens cached by pass 1, if any."""
    features = source.image_features(image, tokens)
    return propagate_mask(image, image_heatmaps(features, ucis, mu_fg), ucis, refine)
