"""LightningDataModule over the common layout, with the weak-label regime plugged in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cellseg.data.datasets import TrainCropDataset, WholeImageDataset, collate_whole_images
from cellseg.data.intensity import (
    check_bit_depth,
    check_stretch,
    describe_bit_depths,
    prepare_image,
    scan_bit_depths,
)
from cellseg.data.layout import SplitLayout
from cellseg.data.sampling import (
    StreamDataLoader,
    StreamSampler,
    batches_per_epoch,
    limited_batches,
    stream_position,
)
from cellseg.data.transforms import AugmentConfig
from cellseg.utils.hashing import stable_seed
from cellseg.utils.io import read_image, read_label

log = logging.getLogger(__name__)

# index.csv `modality_guess` values of the shared DSB2018 copy -> the modality names of docs/data.md#modality.
MODALITY_ALIASES = {"color(HE/brightfield)": "histopathology", "brightfield_gray": "brightfield"}
MODALITIES = ("fluorescence", "histopathology", "brightfield")


class NucleiDataModule(pl.LightningDataModule):
    """Train crops with weak-label targets, whole validation/test/predict images.

    A split is `folder` or `folder:subset`; a subset selects ids from `split_file` (columns id, split[, modality]).
    `val_holdout` moves that many training images (chosen by a seeded hash, not at random) to validation.
    `stretch_percentiles` [low, high] stretches every image's intensities between these percentiles (null: off).
    `bit_depth` (null: auto per image, or 8..16) is the grey range of the stored images (cellseg/data/intensity.py).
    """

    def __init__(
        self,
        name: str,
        root: str,
        dataset: str,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = "test",
        split_file: str | None = None,
        modality: str | None = None,
        val_holdout: int = 0,
        holdout_seed: int = 0,
        max_images: int | None = None,
        crop: int = 256,
        crops_per_image: int = 8,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: dict | None = None,
        mpp: float | None = None,
        stretch_percentiles: list[float] | None = None,
        seed: int = 0,
        bit_depth: int | None = None,
        instances: dict | None = None,
        weak_labels=None,
    ) -> None:
        super().__init__()
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"data.modality={modality!r}; expected one of {MODALITIES} or null")
        check_positive(crop=crop, crops_per_image=crops_per_image, batch_size=batch_size,
                       eval_batch_size=eval_batch_size)
        if num_workers < 0 or val_holdout < 0 or (max_images is not None and max_images < 1):
            raise ValueError(f"data.num_workers={num_workers}, data.val_holdout={val_holdout}, "
                             f"data.max_images={max_images}: expected >= 0, >= 0 and null or >= 1")
        self.name, self.root, self.dataset = name, Path(root), dataset
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.split_file, self.modality = split_file, modality
        self.val_holdout, self.holdout_seed, self.max_images = val_holdout, holdout_seed, max_images
        self.crop, self.crops_per_image = crop, crops_per_image
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.augment = AugmentConfig(**(augment or {})) if augment is not False else None
        self.mpp = mpp
        self.stretch = check_stretch(stretch_percentiles)
        self.seed = int(seed)
        self.bit_depth = check_bit_depth(bit_depth)
        self.instances = check_instance_decoding(instances)
        self._bit_depths_logged: set[str] = set()
        self.weak_labels = weak_labels
        self.target_transform: Callable[[np.ndarray | None, str], np.ndarray] | None = None
        self.val_targets = False
        self.ignore_index = 255
        self.train_target_paths: dict[str, Path] | None = None
        self._datasets: dict[str, object] = {}

    # ----- wiring by methods and pipelines -------------------------------------------------------------------
    def configure_targets(self, transform: Callable, ignore_index: int, val_targets: bool = False) -> None:
        """The method's map from a regime's raw target (instance map, scribble ...) to its training classes;
        `val_targets`: validation images also carry the regime's weak target (e.g. S2L's scribble loss)."""
        self.target_transform, self.ignore_index = transform, ignore_index
        self.val_targets = val_targets

    def use_target_files(self, paths: dict[str, Path]) -> None:
        """Train on these files (e.g. pseudo labels of a pipeline stage) instead of the regime's weak labels."""
        self.train_target_paths = dict(paths)
        self._datasets.pop("train", None)

    # ----- ids and folders --------------------------------------------------------------------------------------
    def layout(self, role: str) -> SplitLayout:
        split = self.splits[role]
        if split is None:
            raise ValueError(f"data.{role}_split is null: this data config has no {role} split")
        return SplitLayout.of(self.root, self.dataset, split.split(":")[0])

    def ids(self, role: str) -> list[str]:
        """Image ids of a role (train, val, test), after subset, modality, hold-out and max_images."""
        if role == "val" and self.splits["val"] is None:
            return self._held_out_ids()
        ids = self._ids_of_split(role)
        if role == "train" and self.val_holdout:
            held = set(self._held_out_ids())
            ids = [i for i in ids if i not in held]
        return ids[: self.max_images] if self.max_images else ids

    def _ids_of_split(self, role: str) -> list[str]:
        layout = self.layout(role)
        ids = layout.ids()
        split = self.splits[role]
        if ":" in split:
            ids = self._subset_from_split_file(ids, split.split(":", 1)[1], layout)
        if self.modality is not None:
            ids = self._filter_modality(ids, layout)
        return ids

    def _held_out_ids(self) -> list[str]:
        if not self.val_holdout:
            return []
        candidates = self._ids_of_split("train")
        if self.val_holdout >= len(candidates):
            raise ValueError(f"data.val_holdout={self.val_holdout} leaves no training image of {len(candidates)}")
        ranked = sorted(candidates, key=lambda i: stable_seed(self.holdout_seed, "val_holdout", i))
        return sorted(ranked[: self.val_holdout])

    def _subset_from_split_file(self, ids: list[str], subset: str, layout: SplitLayout) -> list[str]:
        import pandas as pd

        if not self.split_file:
            raise ValueError(f"split '{layout.split}:{subset}' needs data.split_file (a CSV with id, split)")
        path = Path(self.split_file)
        if not path.is_file():
            raise FileNotFoundError(f"data.split_file {path} does not exist")
        frame = pd.read_csv(path, dtype={"id": str})
        missing_cols = {"id", "split"} - set(frame.columns)
        if missing_cols:
            raise ValueError(f"data.split_file {path} lacks columns {sorted(missing_cols)}")
        wanted = set(frame.loc[frame["split"] == subset, "id"])
        if not wanted:
            raise ValueError(f"data.split_file {path} has no row with split == '{subset}'")
        absent = wanted - set(ids)
        if absent:
            raise FileNotFoundError(f"{len(absent)} ids of {path} (split {subset}) are not in {layout.images_dir}")
        return [i for i in ids if i in wanted]

    def _filter_modality(self, ids: list[str], layout: SplitLayout) -> list[str]:
        index = layout.index()
        column = next((c for c in ("modality", "modality_guess") if index is not None and c in index.columns), None)
        if column is None:
            raise ValueError(f"data.modality={self.modality} needs {layout.index_csv} with a 'modality' column")
        names = index[column].map(lambda m: MODALITY_ALIASES.get(m, m))
        keep = [i for i in ids if names.get(i) == self.modality]
        if not keep:
            raise ValueError(f"no image of modality '{self.modality}' in {layout.index_csv}")
        return keep

    # ----- Lightning hooks ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate (or find cached) weak labels once, on the main process."""
        if self.weak_labels is not None and self.train_target_paths is None:
            self.weak_labels.prepare(self.layout("train"), self.ids("train"))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and "train" not in self._datasets:
            self._datasets["train"] = self._train_dataset()
        if stage in (None, "fit", "validate") and self.has_val and "val" not in self._datasets:
            self._datasets["val"] = self.whole_image_dataset("val", with_labels=True)
            if self.val_targets:
                self._datasets["val"].extra = self._val_weak_targets()

    @property
    def has_val(self) -> bool:
        return self.splits["val"] is not None or bool(self.val_holdout)

    def _train_dataset(self) -> TrainCropDataset:
        if self.target_transform is None:
            raise RuntimeError("the method must call datamodule.configure_targets(...) before fitting")
        layout, ids = self.layout("train"), self.ids("train")
        if self.train_target_paths is not None:
            paths, reader, kind = self.train_target_paths, read_label, "instance"
        elif self.weak_labels is not None:
            paths, reader = self.weak_labels.prepare(layout, ids), self.weak_labels.read_target
            kind = self.weak_labels.target_format
        else:
            raise RuntimeError("NucleiDataModule has neither weak_labels nor target files for training")
        images, targets, depths = [], [], []
        for image_id in tqdm(ids, desc=f"loading {self.name} train", leave=False):
            path = layout.image_path(image_id)
            stored = read_image(path)
            image, depth = prepare_image(stored, self.bit_depth, self.stretch, source=path)
            images.append(image)
            depths.append((stored.dtype.name, depth))
            raw = reader(paths[image_id]) if image_id in paths else None
            targets.append(self.target_transform(raw, kind, images[-1].shape[:2]))
        log.info("train: %d images of %s/%s, %d crops/epoch", len(ids), self.dataset, layout.split, len(ids) * self.crops_per_image)
        self._log_bit_depths("train", layout, depths)
        return TrainCropDataset(ids, images, targets, self.crop, self.crops_per_image, self.ignore_index, self.augment)

    def _val_weak_targets(self) -> Callable[[int], dict]:
        """Per validation image index, {"target": its weak target}, generated like the training ones."""
        if self.weak_labels is None or self.weak_labels.target_format == "none" or self.target_transform is None:
            raise RuntimeError("validation weak targets need the regime's weak labels and configure_targets(...)")
        layout = self.layout("val" if self.splits["val"] else "train")
        ids = self.ids("val")
        paths = self.weak_labels.prepare(layout, ids)
        reader, kind, transform = self.weak_labels.read_target, self.weak_labels.target_format, self.target_transform

        def target(index: int) -> dict:
            raw = reader(paths[ids[index]])
            return {"target": torch.from_numpy(transform(raw, kind, raw.shape[:2]).astype(np.int64))}

        return target

    def whole_image_dataset(self, role: str, with_labels: bool) -> WholeImageDataset:
        layout, ids = self.layout(role if role != "val" or self.splits["val"] else "train"), self.ids(role)
        labels = [layout.label_path(i) for i in ids] if with_labels else None
        images = [layout.image_path(i) for i in ids]
        if role not in self._bit_depths_logged:
            self._log_bit_depths(role, layout, scan_bit_depths(images, self.bit_depth))
        return WholeImageDataset(ids, images, labels, stretch=self.stretch, bit_depth=self.bit_depth)

    def _log_bit_depths(self, role: str, layout: SplitLayout, found: list[tuple[str, int]]) -> None:
        """The one log line per role saying which bit depth its images were given (auto or data.bit_depth)."""
        self._bit_depths_logged.add(role)
        log.info(describe_bit_depths(f"{role} ({self.dataset}/{layout.split})", found, self.bit_depth))

    def train_dataloader(self) -> DataLoader:
        """Batches of the seeded data stream (`StreamSampler`), started where the trainer's global step left it."""
        dataset = self._datasets["train"]
        rank, world_size = self._rank_and_world_size()
        sampler = StreamSampler(dataset, seed=self.seed, num_replicas=world_size, rank=rank)
        drop_last = len(sampler) > self.batch_size
        self._start_stream_where_the_trainer_is(sampler, drop_last)
        return StreamDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # its own generator: creating an epoch's iterator must not draw from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _start_stream_where_the_trainer_is(self, sampler: StreamSampler, drop_last: bool) -> None:
        """A resumed fit (global step k > 0) continues the stream at its k-th batch: epoch k // L, batch k % L."""
        trainer = getattr(self, "trainer", None)
        steps = int(trainer.global_step) if trainer is not None else 0
        if steps == 0:
            return
        epoch_batches = limited_batches(batches_per_epoch(len(sampler), self.batch_size, drop_last),
                                        trainer.limit_train_batches)
        epoch, batches = stream_position(steps * int(trainer.accumulate_grad_batches), epoch_batches)
        sampler.start_at(epoch, batches * self.batch_size)
        log.info("data stream resumed at epoch %d, batch %d (global step %d)", epoch, batches, steps)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self._datasets["val"]) if "val" in self._datasets else []

    def predict_dataloader_for(self, role: str, with_labels: bool = False) -> DataLoader:
        """Whole images of a role, for prediction (test evaluation, pseudo-label stages)."""
        return self._eval_loader(self.whole_image_dataset(role, with_labels))

    def _eval_loader(self, dataset: WholeImageDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_whole_images,
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root),
            "dataset": self.dataset,
            "splits": self.splits,
            "modality": self.modality,
            "instances": self.instances,
            "augment": asdict(self.augment) if self.augment else None,
        }


def check_instance_decoding(instances: dict | None) -> dict | None:
    """`data.instances`: how a predicted foreground of this data is split into nuclei, for the methods that
    predict foreground only (S2L). `{method: NAME, NAME: {keywords}, ...}` -> `{"method": NAME, "kwargs": {...}}`;
    the name itself is checked by the decoding (cellseg.postproc.instances)."""
    if instances is None:
        return None
    if not hasattr(instances, "get") or not isinstance(instances.get("method"), str):
        raise ValueError(f"data.instances={instances!r}; expected a mapping with a 'method' name "
                         "and one mapping of keywords per method, e.g. {method: cc, cc: {connectivity: 8}}")
    method = instances["method"]
    kwargs = instances.get(method, {})
    if not hasattr(kwargs, "items"):
        raise ValueError(f"data.instances.{method}={kwargs!r}; expected a mapping of decoding keywords")
    return {"method": method, "kwargs": dict(kwargs)}


def check_positive(**sizes: int) -> None:
    """One error naming every `data.<key>` that is not a positive integer."""
    bad = {key: value for key, value in sizes.items() if not isinstance(value, int) or value < 1}
    if bad:
        listed = ", ".join(f"data.{key}={value}" for key, value in bad.items())
        raise ValueError(f"{listed}: expected positive integers")
