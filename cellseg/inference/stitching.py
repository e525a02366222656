"""Tiled instance prediction: per-tile instance maps stitched into one map, every instance resolved once.

The tiles are those of `predict_tiled` (`tile_grid`: tiles of `tile` px overlapping by at least `overlap` px, the
last one flush with the image border, an axis no longer than `tile` processed whole after reflect-padding to a
multiple of `pad_multiple`). Each tile *owns* a central region: along each axis the overlap of two neighbouring
tiles is split at its middle, so the owned regions partition the image (`owned_regions`).

Rule, per tile and per instance of the tile's map (the part inside the image):
- *whole*: the instance has no pixel on an interior border of the tile (a tile side that is not an image border);
  otherwise it is *cut*.
- *anchor*: the centre of its bounding box in image coordinates, ((top + bottom) // 2, (left + right) // 2) with
  inclusive ends. The instance belongs to the one tile whose owned region holds its anchor; other tiles drop it.
- Whole owned instances of every tile are pasted first (tiles in raster order of their origins, instances of a tile
  in increasing label), then cut owned instances (`cut="keep"`); each is pasted whole, but a pixel already claimed
  by an earlier instance stays with it (first come, first kept).
- The result is relabelled 1..N in raster order of each instance's first pixel.

Exactness: if `predict_fn` sees every instance it does not cut exactly as the untiled prediction does (a local
detector) and `overlap >= D + 1`, where D is the largest bounding-box side (height or width) of an instance, then
every instance is whole in the tile that owns its anchor and no cut part of any instance is owned: the stitched map
equals the untiled one up to relabelling, with no duplicate (one owner per anchor) and no seam (instances are
pasted whole, never clipped to the owned regions). The bound is tight: with `overlap = D` some placement is cut
by the tile that owns it. For round nuclei D is the largest diameter.

With a smaller overlap an instance can be cut in every tile that holds it. `cut` says what happens then: "keep"
(default) pastes each owned cut part onto the pixels still free, so a too-large instance comes out in pieces
split near the tile borders (pixels only non-owning tiles saw can be missing); "drop" leaves such parts out (the instance may vanish); "raise"
refuses, naming the instance and asking for a larger overlap. In the exact setting no cut part is owned, so the
three agree. A detector that is not exactly local (a network's context changes near tile borders) gives, per
instance, the prediction of the tile that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi
from tqdm import tqdm

from cellseg.inference.tiler import TileGrid, _as_image_tensor, _reflect_pad, check_tiling, tile_grid

InstancePredictFn = Callable[[torch.Tensor], "Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor"]
CUT_MODES = ("keep", "drop", "raise")


def _owned_bounds(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """[lo, hi) per tile along one axis: neighbours split their overlap at its middle; 0 and `length` at the ends."""
    cuts = [(nxt + start + tile) // 2 for start, nxt in zip(starts, starts[1:], strict=False)]
    edges = [0, *cuts, length]
    return list(zip(edges, edges[1:], strict=False))


def owned_regions(grid: TileGrid) -> list[tuple[slice, slice]]:
    """The owned region of each tile of `grid` (same order as `grid.origins`), in image coordinates; they
    partition the image."""
    rows = sorted({r for r, _ in grid.origins})
    cols = sorted({c for _, c in grid.origins})
    row_bounds = dict(zip(rows, _owned_bounds(rows, grid.tile_shape[0], grid.image_shape[0]), strict=True))
    col_bounds = dict(zip(cols, _owned_bounds(cols, grid.tile_shape[1], grid.image_shape[1]), strict=True))
    return [(slice(*row_bounds[r]), slice(*col_bounds[c])) for r, c in grid.origins]


def _as_label_maps(out, batch: torch.Tensor) -> list[np.ndarray]:
    """predict_fn's output as B integer (h, w) numpy maps; one error naming what was expected otherwise."""
    count, height, width = batch.shape[0], batch.shape[2], batch.shape[3]
    if isinstance(out, torch.Tensor | np.ndarray):
        maps = list(out) if out.ndim == 3 else None
    elif isinstance(out, Sequence):
        maps = list(out)
    else:
        maps = None
    if maps is not None:
        maps = [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m) for m in maps]
    valid = maps is not None and len(maps) == count and all(
        m.shape == (height, width) and np.issubdtype(m.dtype, np.integer) and (m.size == 0 or m.min() >= 0)
        for m in maps
    )
    if not valid:
        if hasattr(out, "shape"):
            got = f"{type(out).__name__} {tuple(out.shape)} {out.dtype}"
        elif maps is not None:
            got = f"{len(maps)} maps " + ", ".join(f"{m.shape} {m.dtype}" for m in maps[:3])
        else:
            got = type(out).__name__
        raise ValueError(
            f"predict_fn returned {got} for a batch of shape {tuple(batch.shape)}; expected {count} instance maps "
            f"of shape ({height}, {width}) with integer values >= 0 (0 background), as a list or a (B, h, w) array"
        )
    return maps


def owned_instances(labels: np.ndarray, origin: tuple[int, int], image_shape: tuple[int, int],
                     owned: tuple[slice, slice]) -> list[tuple[bool, np.ndarray, tuple[slice, slice], int]]:
    """(whole, mask in its box, box in image coordinates, label in the tile map) of each instance of one tile map
    (cropped to the image) whose anchor lies in the tile's owned region, in increasing label; `whole` is False for
    an instance with a pixel on an interior border of the tile."""
    (row0, col0), (height, width) = origin, image_shape
    h, w = labels.shape
    interior = (row0 > 0, row0 + h < height, col0 > 0, col0 + w < width)  # top, bottom, left, right
    values, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)
    if values.size and values[0] != 0:  # no background pixel in this tile: index 0 must stay background
        dense = dense + 1
    found = []
    for index, box in enumerate(ndi.find_objects(dense), start=1):
        if box is None:
            continue
        rows, cols = box
        top, bottom, left, right = rows.start, rows.stop - 1, cols.start, cols.stop - 1
        anchor_row, anchor_col = row0 + (top + bottom) // 2, col0 + (left + right) // 2
        if not (owned[0].start <= anchor_row < owned[0].stop and owned[1].start <= anchor_col < owned[1].stop):
            continue
        cut = ((interior[0] and top == 0) or (interior[1] and bottom == h - 1)
               or (interior[2] and left == 0) or (interior[3] and right == w - 1))
        image_box = (slice(row0 + rows.start, row0 + rows.stop), slice(col0 + cols.start, col0 + cols.stop))
        found.append((not cut, dense[box] == index, image_box, int(values[index - 1 if values[0] != 0 else index])))
    return found


@torch.no_grad()
def predict_tiled_instances(
    predict_fn: InstancePredictFn,
    image: torch.Tensor | np.ndarray,
    tile: int = 512,
    overlap: int = 128,
    batch_size: int = 1,
    pad_multiple: int = 32,
    cut: str = "keep",
    progress: bool = False,
    with_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[int, float]]:
    """int32 (H, W) instance map (0 background, 1..N in raster order of first pixels) of a (C, H, W) image.

    `predict_fn` maps a (B, C, h, w) batch of tiles (on the image's device and dtype) to B integer instance maps
    of shape (h, w): a list of arrays/tensors or one (B, h, w) array/tensor; 0 is background, every other value
    one instance (values need not be consecutive; tiles are independent). Tiles lying partly outside the image
    (reflect padding) are cropped to the image before stitching. Stitching rule, exactness condition
    (`overlap` >= the largest instance extent + 1) and `cut` ("keep" | "drop" | "raise"): see the module docstring.

    `with_scores`: `predict_fn` returns `(maps, scores)`, `scores[k]` a {label: score} dict for the k-th map (a
    detector's confidences), and the result is `(instance map, {instance id: score})` for the instances that
    keep at least one pixel.
    """
    check_tiling(tile, overlap, batch_size, pad_multiple)
    if cut not in CUT_MODES:
        raise ValueError(f"cut={cut!r}; expected one of {CUT_MODES}")
    image = _as_image_tensor(image)
    height, width = image.shape[-2:]
    grid = tile_grid(height, width, tile=tile, overlap=overlap, pad_multiple=pad_multiple)
    padded = _reflect_pad(image, grid.padded_shape[0] - height, grid.padded_shape[1] - width)
    windows, owned = list(grid.windows()), owned_regions(grid)
    stitched = np.zeros((height, width), dtype=np.int64)
    next_id, parts, pasted_scores = 1, [], {}  # cut owned instances wait until every whole one is pasted
    for start in tqdm(range(0, len(windows), batch_size), desc="tiles", unit="batch", disable=not progress):
        chunk = windows[start : start + batch_size]
        batch = torch.stack([padded[:, rows, cols] for rows, cols in chunk])
        out = predict_fn(batch)
        out, tile_scores = (out if with_scores else (out, None))
        for number, ((rows, cols), labels) in enumerate(zip(chunk, _as_label_maps(out, batch), strict=True),
                                                        start=start):
            labels = labels[: height - rows.start, : width - cols.start]  # the part inside the image
            scores = tile_scores[number - start] if tile_scores is not None else {}
            for whole, mask, box, value in owned_instances(labels, (rows.start, cols.start), (height, width),
                                                            owned[number]):
                if not whole:
                    if cut == "raise":
                        raise ValueError(_cut_message(box, overlap))
                    parts.append((mask, box, scores.get(value)))
                    continue
                paste_instance(stitched, mask, box, next_id)
                pasted_scores[next_id] = scores.get(value)
                next_id += 1
    if cut == "keep":
        for mask, box, score in parts:
            paste_instance(stitched, mask, box, next_id)
            pasted_scores[next_id] = score
            next_id += 1
    result = relabel_raster(stitched)
    if not with_scores:
        return result
    return result, _carried_scores(stitched, result, pasted_scores)


def _carried_scores(stitched: np.ndarray, relabelled: np.ndarray, scores: dict[int, float | None]) -> dict[int, float]:
    """{final id: score} from the scores of the pasted ids (an instance keeps its id's score through relabelling)."""
    pairs = np.unique(np.stack([stitched.ravel(), relabelled.ravel()]), axis=1)
    return {int(new): float(scores[int(old)]) for old, new in pairs.T
            if old > 0 and scores.get(int(old)) is not None}


def paste_instance(stitched: np.ndarray, mask: np.ndarray, box: tuple[slice, slice], value: int) -> None:
    """`mask` (the instance in its box) onto the pixels of `stitched` still free: first come, first kept."""
    target = stitched[box]
    target[mask & (target == 0)] = value


def _cut_message(box: tuple[slice, slice], overlap: int) -> str:
    rows, cols = box
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    return (f"the instance at rows {rows.start}-{rows.stop - 1}, cols {cols.start}-{cols.stop - 1} is cut by a border "
            f"of the tile that owns it ({extent} px seen, overlap={overlap}): use an overlap of at least the largest "
            f"instance extent + 1, or cut='keep'")


def relabel_raster(labels: np.ndarray) -> np.ndarray:
    """int32 copy of an instance map with ids 1..N in raster order of each instance's first pixel (0 stays 0)."""
    values, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    first = first.astype(np.int64)
    background = values.size > 0 and values[0] == 0
    if background:
        first[0] = -1  # background sorts first and gets 0
    new_ids = np.empty(values.size, dtype=np.int64)
    new_ids[np.argsort(first)] = np.arange(values.size) + (0 if background else 1)
    return new_ids[inverse].reshape(labels.shape).astype(np.int32)
