"""Scribble2Label's per-image EMA of the foreground probability (docs/methods/s2l.md#ema-maps): state, pseudo labels, sharded updates.

Every training image keeps a full-size map Ȳ (initialised to 0). After epoch e with (e + 1) mod Q == 0 each map is
blended with the current prediction, Ȳ <- α·p + (1 - α)·Ȳ. Maps are held (and checkpointed) in `dtype`; the blend
is computed in float32 and rounded back, so a resumed run holds exactly the maps of an uninterrupted one.
Under DDP each rank predicts a disjoint shard of the images and the new maps are all-gathered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from cellseg.data.transforms import CropGeometry, apply_geometry
from cellseg.utils.hashing import sha256_file
from cellseg.utils.io import atomic_path

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "s2l_ema"  # the checkpoint entry holding the maps, or the reference to their sidecar file

EMA_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
STATE_VERSION = 1
# Predicts the foreground probability (H, W) of one normalised (3, H, W) image.
ForegroundFn = Callable[[torch.Tensor], np.ndarray | torch.Tensor]


def is_update_epoch(epoch: int, period: int) -> bool:
    """The reference updates after epochs 4, 9, 14, ... for Q = 5: (e + 1) mod Q == 0."""
    return (epoch + 1) % period == 0


def pseudo_labels(ema: torch.Tensor, tau: float, ignore_index: int) -> torch.Tensor:
    """ŷ = 1 where Ȳ > τ, 0 where Ȳ < 1 - τ, `ignore_index` in between and where Ȳ is NaN (padding); int64."""
    ema = ema.float()
    out = torch.full(ema.shape, ignore_index, dtype=torch.long, device=ema.device)
    out[ema > tau] = 1
    out[ema < 1.0 - tau] = 0
    return out


def ema_blend(previous: torch.Tensor, probability: torch.Tensor, alpha: float) -> torch.Tensor:
    """α·p + (1 - α)·Ȳ computed in float32, returned in Ȳ's dtype."""
    if previous.shape != probability.shape:
        raise ValueError(f"EMA map is {tuple(previous.shape)} but the prediction is {tuple(probability.shape)}")
    blended = alpha * probability.float() + (1.0 - alpha) * previous.float()
    return blended.to(previous.dtype)


def shard(n_items: int, rank: int, world_size: int) -> range:
    """Items of one rank: rank, rank + W, ... (disjoint, no padded duplicates, together all items)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of size {world_size}")
    return range(rank, n_items, world_size)


def dtype_of(name: str) -> torch.dtype:
    if name not in EMA_DTYPES:
        raise ValueError(f"method.module.ema_dtype={name!r}; expected one of {sorted(EMA_DTYPES)}")
    return EMA_DTYPES[name]


class EmaMaps:
    """Ȳ of every training image, keyed by image id, with the bookkeeping that makes resumption exact."""

    def __init__(self, maps: Mapping[str, torch.Tensor], dtype: str = "float16", last_update_epoch: int = -1,
                 n_updates: int = 0) -> None:
        self.dtype_name = dtype
        torch_dtype = dtype_of(dtype)
        self.maps = {str(k): v.detach().to("cpu", torch_dtype).contiguous() for k, v in maps.items()}
        self.last_update_epoch, self.n_updates = int(last_update_epoch), int(n_updates)

    @classmethod
    def zeros(cls, ids: Sequence[str], shapes: Sequence[tuple[int, int]], dtype: str = "float16") -> EmaMaps:
        if len(ids) != len(shapes):
            raise ValueError(f"{len(ids)} image ids but {len(shapes)} shapes")
        torch_dtype = dtype_of(dtype)
        return cls({i: torch.zeros(tuple(s), dtype=torch_dtype) for i, s in zip(ids, shapes, strict=True)}, dtype)

    @property
    def ids(self) -> list[str]:
        return list(self.maps)

    def __getitem__(self, image_id: str) -> torch.Tensor:
        if image_id not in self.maps:
            raise KeyError(f"no EMA map for training image {image_id!r} ({len(self.maps)} maps held)")
        return self.maps[image_id]

    def crop(self, image_id: str, geometry: CropGeometry) -> np.ndarray:
        """Ȳ cut, flipped and turned exactly like the training crop; float32, NaN where the crop was padded."""
        return apply_geometry(self[image_id].float().numpy(), geometry, fill=np.nan)

    def apply(self, updated: Mapping[str, torch.Tensor], epoch: int) -> None:
        """Replace every map by its update (all ids at once: a partial update would desynchronise ranks)."""
        if set(updated) != set(self.maps):
            missing, extra = sorted(set(self.maps) - set(updated)), sorted(set(updated) - set(self.maps))
            raise ValueError(f"EMA update covers the wrong images: missing {missing[:5]}, unexpected {extra[:5]}")
        for image_id, value in updated.items():
            if value.shape != self.maps[image_id].shape:
                raise ValueError(f"EMA update of {image_id} is {tuple(value.shape)}, the map {tuple(self.maps[image_id].shape)}")
            self.maps[image_id] = value.detach().to("cpu", self.maps[image_id].dtype).contiguous()
        self.last_update_epoch, self.n_updates = int(epoch), self.n_updates + 1

    def check_matches(self, ids: Sequence[str], shapes: Sequence[tuple[int, int]] | None = None,
                      source: str = "the data module") -> None:
        """One clear error when restored maps do not belong to these training images."""
        ids = [str(i) for i in ids]
        if set(ids) != set(self.maps):
            missing, extra = sorted(set(ids) - set(self.maps)), sorted(set(self.maps) - set(ids))
            raise ValueError(
                f"the checkpoint's S2L EMA maps do not match the training images of {source}: "
                f"{len(missing)} training ids without a map (e.g. {missing[:3]}), {len(extra)} maps of ids not in "
                f"training (e.g. {extra[:3]}); resume with the same data, split and max_images"
            )
        for image_id, shape in zip(ids, shapes or [], strict=False):
            if tuple(self.maps[image_id].shape) != tuple(shape):
                raise ValueError(
                    f"the checkpoint's S2L EMA map of {image_id} is {tuple(self.maps[image_id].shape)} but the "
                    f"training image is {tuple(shape)}"
                )

    # ----- checkpoint state (plain tensors, strings and ints: loadable with torch.load(weights_only=True)) -------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "dtype": self.dtype_name,
            "last_update_epoch": self.last_update_epoch,
            "n_updates": self.n_updates,
            "maps": dict(self.maps),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> EmaMaps:
        missing = {"version", "dtype", "maps"} - set(state)
        if missing or state["version"] != STATE_VERSION:
            raise ValueError(
                f"S2L EMA state has keys {sorted(state)} and version {state.get('version')}; expected version "
                f"{STATE_VERSION} with dtype and maps"
            )
        return cls(state["maps"], state["dtype"], state.get("last_update_epoch", -1), state.get("n_updates", 0))


def compute_shard_updates(
    maps: EmaMaps,
    dataset: Sequence[dict],
    predict_foreground: ForegroundFn,
    alpha: float,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Blended maps of this rank's shard of `dataset` (whole normalised images with their `id`)."""
    updated: dict[str, torch.Tensor] = {}
    indices = shard(len(dataset), rank, world_size)
    for index in tqdm(indices, desc="S2L EMA update", unit="image", disable=not progress, leave=False):
        item = dataset[index]
        probability = torch.as_tensor(np.asarray(predict_foreground(item["image"]), dtype=np.float32))
        updated[item["id"]] = ema_blend(maps[item["id"]], probability, alpha)
    return updated


def all_gather_updates(updates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Union of every rank's updates (identity without an initialised process group); shards must be disjoint."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return updates
    gathered: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in updates.items()})
    merged: dict[str, torch.Tensor] = {}
    for part in gathered:
        overlap = set(merged) & set(part or {})
        if overlap:
            raise RuntimeError(f"two ranks updated the same EMA maps {sorted(overlap)[:3]}: shards must be disjoint")
        merged.update(part or {})
    return merged


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers: DDP without SyncBatchNorm leaves each rank its own BatchNorm running
    statistics, and every shard must be predicted by the same model (the one rank 0 checkpoints)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def update_ema_maps(
    maps: EmaMaps,
    dataset: Sequence[dict],
    predict_foreground: ForegroundFn,
    alpha: float,
    epoch: int,
    progress: bool = False,
) -> None:
    """One EMA step over all training images: this rank's shard, all-gathered, applied on every rank."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    updates = compute_shard_updates(maps, dataset, predict_foreground, alpha, rank, world_size, progress)
    maps.apply(all_gather_updates(updates), epoch)
    if rank == 0:
        log.info("S2L EMA maps updated after epoch %d (%d images, update %d)", epoch, len(maps.maps), maps.n_updates)


# ----- `ema_store: sidecar`: the maps in their own file, the checkpoint holds its name and sha256 ---------------
def sidecar_path(maps: EmaMaps, folder: str | Path) -> Path:
    return Path(folder) / f"ema_update{maps.n_updates:05d}.pt"


def save_sidecar(maps: EmaMaps, folder: str | Path) -> dict:
    """Write the maps to `<folder>/ema_update<n>.pt` (atomic) and return the reference a checkpoint keeps."""
    path = sidecar_path(maps, folder)
    with atomic_path(path) as tmp:
        torch.save(maps.state_dict(), tmp)
    return {"sidecar": str(path.resolve()), "sha256": sha256_file(path), "n_updates": maps.n_updates}


def prune_sidecars(folder: str | Path, checkpoint_dirs: Sequence[str | Path], keep: str | Path) -> list[Path]:
    """Delete the sidecar files of `folder` that no checkpoint in `checkpoint_dirs` refers to, except `keep` (the
    file of the checkpoint being written); nothing is deleted when a checkpoint cannot be read. The deleted paths."""
    referenced = {Path(keep).name}
    for directory in checkpoint_dirs:
        for checkpoint in sorted(Path(directory).glob("*.ckpt")):
            try:  # mmap: only the pickled structure is read, not the weights
                state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(CHECKPOINT_KEY)
            except Exception as error:  # noqa: BLE001 - an unreadable checkpoint must not lose its maps
                log.warning("S2L EMA sidecars not pruned: cannot read %s (%s)", checkpoint, error)
                return []
            if isinstance(state, Mapping) and is_sidecar_reference(state):
                referenced.add(Path(state["sidecar"]).name)
    stale = [path for path in sorted(Path(folder).glob("ema_update*.pt")) if path.name not in referenced]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def is_sidecar_reference(state: Mapping) -> bool:
    return "sidecar" in state and "sha256" in state


def load_sidecar(reference: Mapping, folder: str | Path | None = None) -> EmaMaps:
    """The maps a checkpoint refers to; the file is looked up at its recorded path, then by name in `folder`
    (a moved run folder); its sha256 must match."""
    recorded = Path(reference["sidecar"])
    candidates = [recorded] + ([Path(folder) / recorded.name] if folder is not None else [])
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"S2L EMA sidecar {recorded.name} not found (looked in "
                                f"{[str(p.parent) for p in candidates]}): the checkpoint needs it to resume exactly")
    digest = sha256_file(path)
    if digest != reference["sha256"]:
        raise ValueError(f"S2L EMA sidecar {path} has sha256 {digest[:12]}..., the checkpoint expects "
                         f"{reference['sha256'][:12]}...: the file was overwritten or belongs to another run")
    return EmaMaps.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
