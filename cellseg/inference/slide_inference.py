"""Whole-slide instance segmentation in bounded memory, streamed to disk and resumable (docs/framework.md#whole-slide-inference).

The analysis grid of a slide (`SlideReader`: the slide at the model's resolution), or of its region of interest
(`roi`, level-0 px), is cut into *chunks*: windows
of `chunk + 2 * margin` px overlapping by `2 * margin`, the last one flush with the slide border. They are the
tiles of `tile_grid` at that size, so the stitching rule of `cellseg.inference.stitching` applies unchanged:
each chunk owns a central region, the owned regions partition the slide, and a chunk keeps the instances whose
anchor (bounding-box centre) lies in its owned region. With `margin >= D + 1` (D the largest nucleus extent, in
analysis pixels) every kept instance is whole in its chunk: no nucleus is lost, none is written twice, none is
clipped at a chunk border. Inside a chunk the model runs its own tiled inference (`infer.tile`, batches).

Chunks are read by DataLoader workers; a chunk whose owned region holds less than `min_tissue` tissue (a
low-resolution saturation mask) is skipped. Each processed chunk writes its nuclei as one GeoJSON-lines file and
one CSV part (atomically, so a chunk is done when its files exist); when every chunk is done the parts are
merged, streaming, into `<slide>.geojson` (QuPath FeatureCollection, level-0 coordinates) and `<slide>.csv`
(ids 1..N in chunk order), a thumbnail with the nuclei's centroids is drawn, and `done.json` records the run.
With `labels`, each chunk's window also becomes a label tile with the slide-wide ids (`labels/`, placed by
`labels/index.csv`): tiles overlap by 2 * margin, each nucleus is whole in exactly one tile and absent (0) from
the others, so pasting every tile's nonzero pixels rebuilds the slide's instance map.
Memory holds one chunk at a time (per worker), whatever the slide's size.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from cellseg.inference.slide_reader import SlideReader, tissue_mask
from cellseg.inference.stitching import owned_instances, owned_regions, paste_instance
from cellseg.inference.tiler import check_tiling, tile_grid
from cellseg.inference.writers import TABLE_COLUMNS, instances_table, instances_to_geojson
from cellseg.utils.io import atomic_path, write_json

log = logging.getLogger(__name__)
SegmentFn = Callable[[np.ndarray], tuple[np.ndarray, dict | None]]  # RGB uint8 (h, w, 3) -> (labels, scores)
SETTINGS_FILE, DONE_FILE, PARTS_DIR = "settings.json", "done.json", "parts"


@dataclass(frozen=True)
class SlideSettings:
    """How a slide is cut and what is written (configs/infer.yaml, `infer.slide`)."""

    chunk: int = 2048            # owned size of a chunk (analysis px)
    margin: int = 128            # context each side: >= the largest nucleus extent + 1
    min_tissue: float = 0.01     # skip a chunk whose owned region has a smaller tissue fraction (0: keep all)
    tissue_side: int = 2048      # longest side of the tissue-mask thumbnail
    num_workers: int = 0         # DataLoader workers reading chunks
    simplify: float = 0.5        # GeoJSON contour simplification (px)
    overlay: bool = True         # thumbnail.png + overlay.png
    roi: tuple[int, int, int, int] | None = None  # (x, y, width, height) in level-0 px: segment only this region
    labels: bool = False         # label tiles: labels/<x>_<y>.tif per chunk window (global ids) + labels/index.csv

    def check(self) -> None:
        if self.margin < 0 or self.chunk < 1:
            raise ValueError(f"infer.slide.chunk={self.chunk}, margin={self.margin}; expected chunk >= 1, margin >= 0")
        check_tiling(self.chunk + 2 * self.margin, 2 * self.margin, pad_multiple=32, key="infer.slide.chunk + 2 * margin: ")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"infer.slide.min_tissue={self.min_tissue}; expected a fraction in [0, 1]")
        if self.roi is not None and (len(self.roi) != 4 or min(self.roi[2:]) < 1 or min(self.roi[:2]) < 0):
            raise ValueError(f"infer.slide.roi={list(self.roi)}; expected [x, y, width, height] in level-0 pixels, "
                             "x, y >= 0 and width, height >= 1")


def region_of_interest(settings: SlideSettings, shape: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) on the analysis grid of `settings.roi` (the whole grid without one), clipped
    to the slide; a region outside the slide raises ValueError."""
    if settings.roi is None:
        return 0, 0, *shape
    x, y, width, height = settings.roi
    top, left = math.floor(y / scale), math.floor(x / scale)
    bottom, right = min(math.ceil((y + height) / scale), shape[0]), min(math.ceil((x + width) / scale), shape[1])
    if top >= bottom or left >= right:
        raise ValueError(f"infer.slide.roi={list(settings.roi)} lies outside the slide "
                         f"({shape[1] * scale:.0f} x {shape[0] * scale:.0f} level-0 px)")
    return top, left, bottom - top, right - left


Region = tuple[slice, slice]


def chunk_grid(shape: tuple[int, int], settings: SlideSettings) -> tuple[list[Region], list[Region]]:
    """The chunk windows of an analysis grid of `shape`, clipped to it, and the region each owns (image
    coordinates)."""
    grid = tile_grid(*shape, tile=settings.chunk + 2 * settings.margin, overlap=2 * settings.margin)
    windows = [(slice(rows.start, min(rows.stop, shape[0])), slice(cols.start, min(cols.stop, shape[1])))
               for rows, cols in grid.windows()]
    return windows, owned_regions(grid)


def tissue_fractions(mask: np.ndarray, factor: float, owned: list[Region]) -> list[float]:
    """Tissue fraction of each owned region, from a mask at `factor` analysis px per mask px."""
    fractions = []
    for rows, cols in owned:
        r0, r1 = math.floor(rows.start / factor), max(math.ceil(rows.stop / factor), math.floor(rows.start / factor) + 1)
        c0, c1 = math.floor(cols.start / factor), max(math.ceil(cols.stop / factor), math.floor(cols.start / factor) + 1)
        part = mask[r0:r1, c0:c1]
        fractions.append(float(part.mean()) if part.size else 0.0)
    return fractions


class ChunkDataset(torch.utils.data.Dataset):
    """(chunk index, RGB uint8 window) of the chunks to process, `windows` (clipped, `chunk_grid`) placed at
    `origin` (row, col) of the analysis grid; the reader reopens the slide in each worker."""

    def __init__(self, reader: SlideReader, windows: list[Region], indices: list[int],
                 origin: tuple[int, int] = (0, 0)) -> None:
        self.reader, self.windows, self.indices, self.origin = reader, windows, indices, origin

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        index = self.indices[k]
        rows, cols = self.windows[index]
        return index, self.reader.read(self.origin[0] + rows.start, self.origin[1] + cols.start,
                                       rows.stop - rows.start, cols.stop - cols.start)


def as_read(sample):
    """The DataLoader's collate function: the (index, numpy window) pair as the dataset returned it."""
    return sample


def kept_instances(labels: np.ndarray, scores: dict | None, origin: tuple[int, int], shape: tuple[int, int],
                   owned: tuple[slice, slice]) -> tuple[np.ndarray, dict[int, float]]:
    """The instances a chunk keeps, as a label map of the chunk (1..n: whole ones first, then cut ones on the
    pixels still free) and their scores."""
    kept = np.zeros(labels.shape, dtype=np.int32)
    kept_scores, next_id = {}, 1
    found = owned_instances(labels, origin, shape, owned)
    for _whole, mask, box, value in sorted(found, key=lambda item: not item[0]):
        local = (slice(box[0].start - origin[0], box[0].stop - origin[0]),
                 slice(box[1].start - origin[1], box[1].stop - origin[1]))
        paste_instance(kept, mask, local, next_id)
        if scores and scores.get(value) is not None:
            kept_scores[next_id] = float(scores[value])
        next_id += 1
    return kept, kept_scores


class SlideSegmentation:
    """One slide's run into `out_dir`: chunks, parts, merge, thumbnail, `done.json`."""

    def __init__(self, reader: SlideReader, segment: SegmentFn, out_dir: Path, settings: SlideSettings,
                 slide_id: str, recipe_id: str = "") -> None:
        settings.check()
        self.reader, self.segment, self.out_dir, self.settings = reader, segment, Path(out_dir), settings
        self.slide_id = slide_id
        identity = {"slide": str(reader.path), "settings": asdict(settings), "recipe": recipe_id,
                    "target_mpp": reader.geometry.target_mpp, "slide_mpp": reader.geometry.slide_mpp}
        self.identity = json.loads(json.dumps(identity))  # as done.json stores it (tuples become lists)
        top, left, height, width = region_of_interest(settings, reader.shape, reader.geometry.scale)
        self.origin, self.shape = (top, left), (height, width)
        self.windows, self.owned = chunk_grid(self.shape, settings)
        self.parts = self.out_dir / PARTS_DIR

    def finished_summary(self) -> dict | None:
        """`done.json` of an earlier run of this same slide and settings, else None."""
        done = self.out_dir / DONE_FILE
        summary = json.loads(done.read_text()) if done.is_file() else None
        return summary if summary is not None and summary.get("identity") == self.identity else None

    def run(self, progress: bool = True) -> dict:
        """Process every chunk not yet done, merge, and return the summary written to `done.json`."""
        finished = self.finished_summary()
        if finished is not None:
            log.info("slide %s: done in %s, skipped", self.slide_id, self.out_dir)
            return finished
        self.prepare_parts()
        start, cpu_start = time.perf_counter(), time.process_time()
        thumbnail, factor = self.reader.thumbnail(self.settings.tissue_side)
        mask = tissue_mask(thumbnail) if self.settings.min_tissue > 0 else np.ones(thumbnail.shape[:2], bool)
        fractions = tissue_fractions(mask, factor, [self.on_slide(region) for region in self.owned])
        minimum = self.settings.min_tissue
        with_tissue = [i for i, f in enumerate(fractions) if minimum == 0 or (f > 0 and f >= minimum)]
        todo = [i for i in with_tissue if not self.part_path(i, ".csv").is_file()]
        log.info("slide %s: %d x %d analysis px at %s µm/px, %d chunks, %d with tissue, %d to do", self.slide_id,
                 *self.shape, self.reader.geometry.target_mpp, len(self.owned), len(with_tissue), len(todo))
        for index, window in tqdm(self.chunks(todo), total=len(todo), desc=f"slide {self.slide_id}", unit="chunk",
                                  disable=not progress):
            self.process_chunk(index, window)
        nuclei = self.merge(with_tissue)
        if self.settings.overlay:
            self.write_overlay(thumbnail, factor)
        summary = {
            "identity": self.identity, "slide_id": self.slide_id, "analysis_shape": list(self.shape),
            "analysis_origin": list(self.origin),
            "scale": self.reader.geometry.scale, "chunks": len(self.owned), "chunks_with_tissue": len(with_tissue),
            "chunks_skipped": len(self.owned) - len(with_tissue), "chunks_this_run": len(todo), "nuclei": nuclei,
            "wall_s_this_run": time.perf_counter() - start, "cpu_s_this_run": time.process_time() - cpu_start,
        }
        write_json(self.out_dir / DONE_FILE, summary)
        shutil.rmtree(self.parts)
        return summary

    def prepare_parts(self) -> None:
        """Keep the parts of an interrupted run with the same identity; start over otherwise."""
        settings_file = self.parts / SETTINGS_FILE
        if settings_file.is_file() and json.loads(settings_file.read_text()) != self.identity:
            log.warning("slide %s: parts in %s are from other settings; starting over", self.slide_id, self.parts)
            shutil.rmtree(self.parts)
        (self.out_dir / DONE_FILE).unlink(missing_ok=True)
        if not settings_file.is_file():
            write_json(settings_file, self.identity)

    def on_slide(self, region: tuple[slice, slice]) -> tuple[slice, slice]:
        """A region of the chunk grid in analysis-grid coordinates of the whole slide."""
        (top, left), (rows, cols) = self.origin, region
        return slice(rows.start + top, rows.stop + top), slice(cols.start + left, cols.stop + left)

    def part_path(self, index: int, suffix: str) -> Path:
        return self.parts / f"chunk{index:06d}{suffix}"

    def chunks(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        loader = torch.utils.data.DataLoader(ChunkDataset(self.reader, self.windows, indices, self.origin),
                                             batch_size=None, collate_fn=as_read,
                                             num_workers=self.settings.num_workers)
        yield from loader

    def process_chunk(self, index: int, window: np.ndarray) -> None:
        """Segment one chunk and write its kept nuclei: GeoJSON lines first, the CSV last (the done marker)."""
        rows, cols = self.windows[index]
        labels, scores = self.segment(window)
        kept, kept_scores = kept_instances(labels, scores, (rows.start, cols.start), self.shape, self.owned[index])
        scale, mpp = self.reader.geometry.scale, self.reader.geometry.target_mpp
        offset = (float(self.origin[1] + cols.start), float(self.origin[0] + rows.start))
        features = instances_to_geojson(kept, scores=kept_scores, simplify=self.settings.simplify,
                                        offset_xy=offset, scale=scale, mpp=mpp)["features"]
        table = instances_table(kept, self.slide_id, image=window, scores=kept_scores, mpp=mpp, offset_xy=offset,
                                scale=scale)
        with atomic_path(self.part_path(index, ".geojsonl")) as tmp:
            tmp.write_text("".join(json.dumps(f, separators=(",", ":"), allow_nan=False) + "\n" for f in features))
        if self.settings.labels:
            with atomic_path(self.part_path(index, ".labels.tif")) as tmp:
                tifffile.imwrite(tmp, kept.astype(np.uint32), compression="zlib")
        with atomic_path(self.part_path(index, ".csv")) as tmp:
            table.to_csv(tmp, index=False)

    def merge(self, indices: list[int]) -> int:
        """Parts -> `<slide>.geojson` and `<slide>.csv` with ids 1..N in chunk order; returns N."""
        next_id = 1
        with atomic_path(self.out_dir / f"{self.slide_id}.geojson") as geo_tmp, \
                atomic_path(self.out_dir / f"{self.slide_id}.csv") as csv_tmp:
            with open(geo_tmp, "w") as geo, open(csv_tmp, "w") as csv:
                geo.write('{"type":"FeatureCollection","features":[\n')
                csv.write(",".join(TABLE_COLUMNS) + "\n")
                first = True
                for index in indices:
                    table = pd.read_csv(self.part_path(index, ".csv"))
                    features = self.part_path(index, ".geojsonl").read_text().splitlines()
                    if len(features) != len(table):  # a nucleus too thin for a polygon: in the table only
                        log.warning("chunk %d: %d of %d nuclei have no polygon", index, len(table) - len(features),
                                    len(table))
                    ids = dict(zip(table["instance_id"], range(next_id, next_id + len(table)), strict=True))
                    for line in features:
                        feature = json.loads(line)
                        measurements = feature["properties"]["measurements"]
                        measurements["instance_id"] = ids[measurements["instance_id"]]
                        geo.write(("" if first else ",\n") + json.dumps(feature, separators=(",", ":")))
                        first = False
                    table["instance_id"] = table["instance_id"].map(ids)
                    table.to_csv(csv, index=False, header=False)
                    if self.settings.labels:
                        self.write_label_tile(index, ids)
                    next_id += len(table)
                geo.write("\n]}\n")
        if self.settings.labels:
            self.write_label_index(indices)
        return next_id - 1

    def label_tile_path(self, index: int) -> Path:
        rows, cols = self.on_slide(self.windows[index])
        return self.out_dir / "labels" / f"x{cols.start:07d}_y{rows.start:07d}.tif"

    def write_label_tile(self, index: int, ids: dict[int, int]) -> None:
        """A chunk's kept nuclei with their slide-wide ids (the window's label map, analysis px)."""
        local = tifffile.imread(self.part_path(index, ".labels.tif"))
        lookup = np.zeros(int(local.max()) + 1, dtype=np.uint32)
        for old, new in ids.items():
            lookup[int(old)] = new
        with atomic_path(self.label_tile_path(index)) as tmp:
            tifffile.imwrite(tmp, lookup[local], compression="zlib")

    def write_label_index(self, indices: list[int]) -> None:
        """labels/index.csv: each tile's file and place (analysis px; level-0 px = analysis px x scale)."""
        rows = []
        for index in indices:
            window_rows, window_cols = self.on_slide(self.windows[index])
            rows.append({"file": self.label_tile_path(index).name, "x": window_cols.start, "y": window_rows.start,
                         "width": window_cols.stop - window_cols.start, "height": window_rows.stop - window_rows.start,
                         "scale": self.reader.geometry.scale})
        with atomic_path(self.out_dir / "labels" / "index.csv") as tmp:
            pd.DataFrame(rows, columns=["file", "x", "y", "width", "height", "scale"]).to_csv(tmp, index=False)

    def write_overlay(self, thumbnail: np.ndarray, factor: float) -> None:
        """thumbnail.png and overlay.png (one dot per nucleus centroid), read back from the CSV in pieces."""
        image = Image.fromarray(thumbnail)
        with atomic_path(self.out_dir / "thumbnail.png") as tmp:
            image.save(tmp, format="PNG")
        draw = ImageDraw.Draw(image)
        per_level0 = 1.0 / (self.reader.geometry.scale * factor)
        for part in pd.read_csv(self.out_dir / f"{self.slide_id}.csv", usecols=["centroid_x", "centroid_y"],
                                chunksize=100_000):
            for x, y in zip(part["centroid_x"] * per_level0, part["centroid_y"] * per_level0, strict=True):
                draw.point((x, y), fill=(0, 255, 0))
        with atomic_path(self.out_dir / "overlay.png") as tmp:
            image.save(tmp, format="PNG")
