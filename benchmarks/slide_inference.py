"""Whole-slide inference on synthetic pyramidal TIFFs built from MoNuSeg tiles: speed, background skipping,
peak memory against slide size, and agreement with a tile predicted alone.

    python benchmarks/slide_inference.py --ckpt RUN/checkpoints/last.ckpt [--sizes 10000 20000]
                                         [--output logs/bench_slides] [--data-root ../shared/data] [--skip-run]
                                         [overrides]

Per size S, the script writes `<output>/slide_<S>.tif`: an S x S RGB canvas of glass (RGB 242, 240, 245) on
which MoNuSeg test images (1000 x 1000, 0.25 µm/px) are laid on a grid with 500 px gutters, only in the cells
inside a central ellipse (semi-axes 0.42 S and 0.36 S), so the outer part is background as on a real slide; the
canvas is a numpy memmap and the pyramid (4 levels, zlib, 256 px tiles) is written by tifffile. Then it runs

    python infer.py ckpt_path=<ckpt> slides=<slide> hydra.run.dir=<output>/run_<S> [overrides]

in a child process and prints, from the slide's `done.json` and the child's resource usage: chunks (processed /
skipped as background), model tiles per second (the module's `infer.tile` tiles of each processed chunk),
megapixels per minute (whole slide and tissue chunks only), wall and CPU minutes, and the child's peak RSS.

Agreement: the first MoNuSeg tile of the slide (the probe) is read back from the slide, predicted alone by
`infer.py input_dir=...`, and both GeoJSONs are rasterised the same way (polygon fill at pixel centres) over the
probe's area: AJI(alone, slide) is printed (target >= 0.99). Slide nuclei are those whose centroid lies in the
probe. Beside it, the model's own sensitivity to where it sees a tile (no slide code involved): AJI between the
probe's instance maps predicted alone and inside a 300 px glass border, and between the probe inside that border
and inside the same border moved by 10 px and by 32 px (the encoder's stride), same glass context; the slide
cannot agree with the alone prediction better than the model agrees with itself. `--skip-run` reuses the slides
and run folders of an earlier call (wall and CPU from `done.json`, peak RSS from `bench.json` when the run wrote
one).
The data root defaults to $CELLSEG_TEST_DATA, else ../shared/data beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _run import DEFAULT_DATA_ROOT, REPO_ROOT
from skimage.draw import polygon as fill_polygon

from cellseg.inference.pyramid import write_pyramidal_tiff
from cellseg.inference.slide_reader import SlideReader
from cellseg.inference.tiler import tile_grid
from cellseg.metrics.instance import instance_metrics
from cellseg.utils.io import read_image, write_image

GLASS = (242, 240, 245)
TILE, GUTTER, MPP = 1000, 500, 0.25
# the child's peak RSS (ru_maxrss of its children, KiB on Linux) printed after the command it runs
RSS_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def tile_origins(size: int) -> list[tuple[int, int]]:
    """(row, col) of every MoNuSeg tile of a slide of `size`: grid cells inside the central ellipse."""
    step, placed = TILE + GUTTER, []
    for row in range(GUTTER, size - TILE, step):
        for col in range(GUTTER, size - TILE, step):
            y, x = (row + TILE / 2 - size / 2) / (0.36 * size), (col + TILE / 2 - size / 2) / (0.42 * size)
            if x * x + y * y <= 1:
                placed.append((row, col))
    return placed


def build_slide(path: Path, size: int, tiles: list[np.ndarray]) -> tuple[int, int]:
    """Write the synthetic slide; returns the (row, col) of the probe tile (the first one laid)."""
    canvas = np.lib.format.open_memmap(path.with_suffix(".npy"), mode="w+", dtype=np.uint8, shape=(size, size, 3))
    canvas[:] = GLASS
    placed = tile_origins(size)
    for k, (row, col) in enumerate(placed):
        canvas[row:row + TILE, col:col + TILE] = tiles[k % len(tiles)]
    canvas.flush()
    write_pyramidal_tiff(path, canvas, mpp=MPP, levels=4, tile=256)
    del canvas
    path.with_suffix(".npy").unlink()
    print(f"{path.name}: {size} x {size} px, {len(placed)} MoNuSeg tiles "
          f"({len(placed) * TILE * TILE / size**2:.1%} of the area)", flush=True)
    return placed[0]


def run_child(command: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS MiB) of `command` run through the RSS wrapper."""
    env = {**os.environ, "WANDB_MODE": "disabled", "CELLSEG_OFFLINE": "1"}
    print("$", " ".join(command), flush=True)
    start, cpu = time.perf_counter(), os.times()
    result = subprocess.run([sys.executable, "-c", RSS_WRAPPER, sys.executable, *command], env=env,
                            capture_output=True, text=True)
    after = os.times()
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"{Path(command[0]).name} failed with exit code {result.returncode}")
    rss = int(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("peak_rss_kib")))
    cpu_s = (after.children_user - cpu.children_user) + (after.children_system - cpu.children_system)
    return time.perf_counter() - start, cpu_s, rss // 1024


def rasterise(geojson: Path, top: int, left: int, size: int) -> np.ndarray:
    """Instance map of the features whose first ring's centroid lies in the size x size square at (top, left)."""
    label = np.zeros((size, size), dtype=np.int32)
    features = json.loads(geojson.read_text())["features"]
    for number, feature in enumerate(features, start=1):
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        exterior = np.asarray(polygons[0][0], dtype=float)
        cx, cy = exterior[:, 0].mean(), exterior[:, 1].mean()
        if not (left <= cx < left + size and top <= cy < top + size):
            continue
        for rings in polygons:
            ring = np.asarray(rings[0], dtype=float)
            rows, cols = fill_polygon(ring[:, 1] - 0.5 - top, ring[:, 0] - 0.5 - left, shape=label.shape)
            label[rows, cols] = number
    return label


def model_tiles(done: dict, tile: int, overlap: int, chunk: int, margin: int) -> int:
    """How many `tile` px model tiles the processed chunks hold (a chunk window is chunk + 2 margin a side)."""
    window = chunk + 2 * margin
    return done["chunks_this_run"] * len(tile_grid(window, window, tile=tile, overlap=overlap).origins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "logs" / "bench_slides")
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("CELLSEG_TEST_DATA", DEFAULT_DATA_ROOT)))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--margin", type=int, default=128)
    parser.add_argument("--no-hflip", dest="hflip", action="store_false", help="infer.hflip=false (2x faster)")
    parser.add_argument("--skip-run", action="store_true", help="reuse the slides and runs under --output")
    args, overrides = parser.parse_known_args()
    images = sorted((args.data_root / "MoNuSeg" / "test" / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"no MoNuSeg test images under {args.data_root / 'MoNuSeg' / 'test' / 'images'}")
    tiles = [read_image(p)[:TILE, :TILE, :3] for p in images]
    args.output.mkdir(parents=True, exist_ok=True)
    settings = [f"infer.tile={args.tile}", f"infer.overlap={args.overlap}", f"infer.hflip={str(args.hflip).lower()}",
                f"infer.slide.chunk={args.chunk}", f"infer.slide.margin={args.margin}", *overrides]
    rows = []
    for size in args.sizes:
        slide = args.output / f"slide_{size}.tif"
        run_dir = args.output / f"run_{size}"
        if args.skip_run:
            probe_origin = tile_origins(size)[0]
        else:
            probe_origin = build_slide(slide, size, tiles)
            wall, cpu, rss = run_child([str(REPO_ROOT / "infer.py"), f"ckpt_path={args.ckpt}", f"slides={slide}",
                                        f"hydra.run.dir={run_dir}", *settings])
            (run_dir / "bench.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss}))
        done = json.loads((run_dir / "slides" / slide.stem / "done.json").read_text())
        measured = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").is_file() else {}
        wall = measured.get("wall_s", done["wall_s_this_run"])
        cpu = measured.get("cpu_s", done["cpu_s_this_run"])
        rss = measured.get("peak_rss_mib", "n/a")
        rows.append({"size": size, "done": done, "wall": wall, "cpu": cpu, "rss": rss, "probe": probe_origin,
                     "slide": slide, "run_dir": run_dir})
    print_table(rows, args)
    probe = rows[0]
    print(f"probe AJI (size {probe['size']}): {probe_agreement(probe, args, settings):.4f} (target >= 0.99)")
    sensitivity = context_sensitivity(probe, args)
    print(f"model's own AJI, probe alone vs inside 300 px of glass: {sensitivity['alone']:.4f}; inside glass, moved "
          f"by 10 px: {sensitivity['moved_10']:.4f}, by 32 px: {sensitivity['moved_32']:.4f}")


def probe_agreement(row: dict, args, settings: list[str]) -> float:
    """AJI between the probe tile predicted alone and the slide's nuclei over the probe's area."""
    top, left = row["probe"]
    reader = SlideReader(row["slide"], target_mpp=MPP)
    folder = args.output / f"probe_{row['size']}" / "images"
    write_image(folder / "probe.png", reader.read(top, left, TILE, TILE))
    alone = args.output / f"probe_{row['size']}" / "run"
    run_child([str(REPO_ROOT / "infer.py"), f"ckpt_path={args.ckpt}", f"input_dir={folder}", f"hydra.run.dir={alone}",
               "infer.outputs=[geojson]", *[s for s in settings if not s.startswith("infer.slide.")]])
    alone_map = rasterise(alone / "geojson" / "probe.geojson", 0, 0, TILE)
    slide_map = rasterise(row["run_dir"] / "slides" / row["slide"].stem / f"{row['slide'].stem}.geojson", top, left,
                          TILE)
    return instance_metrics(alone_map, slide_map)["aji"]


def context_sensitivity(row: dict, args, border: int = 300) -> dict[str, float]:
    """AJI of the probe's instance maps: alone vs inside `border` px of glass (cropped back), and inside glass vs
    inside glass with the probe moved by 10 and by 32 px (the same context, another position under the tiles)."""
    from cellseg.data.transforms import to_normalised_tensor
    from cellseg.tasks.infer import load_inference_model

    module, _ = load_inference_model(args.ckpt)
    module.inference.update(tile=args.tile, overlap=args.overlap, hflip=args.hflip)
    probe = read_image(args.output / f"probe_{row['size']}" / "images" / "probe.png")

    def predicted_inside_glass(offset: int) -> np.ndarray:
        framed = np.empty((TILE + 2 * border + offset, TILE + 2 * border + offset, 3), dtype=np.uint8)
        framed[:] = GLASS
        start = border + offset
        framed[start:start + TILE, start:start + TILE] = probe
        return module.predict_instances(to_normalised_tensor(framed))[start:start + TILE, start:start + TILE]

    inside = predicted_inside_glass(0)
    alone = module.predict_instances(to_normalised_tensor(probe))
    return {"alone": instance_metrics(alone, inside)["aji"],
            **{f"moved_{k}": instance_metrics(inside, predicted_inside_glass(k))["aji"] for k in (10, 32)}}


def print_table(rows: list[dict], args) -> None:
    header = ("size", "chunks", "skipped", "tiles/s", "Mpx/min slide", "Mpx/min tissue", "nuclei", "wall min",
              "CPU min", "peak RSS MiB")
    print(" | ".join(header))
    for row in rows:
        done, wall = row["done"], row["wall"]
        processed = done["chunks_this_run"]
        tiles = model_tiles(done, args.tile, args.overlap, args.chunk, args.margin)
        height, width = done["analysis_shape"]
        tissue_mpx = processed * args.chunk**2 / 1e6  # owned area of the processed chunks (border chunks: less)
        print(" | ".join([
            f"{row['size']}²", str(done["chunks"]), f"{done['chunks_skipped']} ({done['chunks_skipped'] / done['chunks']:.1%})",
            f"{tiles / done['wall_s_this_run']:.2f}", f"{height * width / 1e6 / (wall / 60):.1f}",
            f"{min(tissue_mpx, height * width / 1e6) / (wall / 60):.1f}", str(done["nuclei"]),
            f"{wall / 60:.1f}", f"{row['cpu'] / 60:.1f}", str(row["rss"]),
        ]))


if __name__ == "__main__":
    main()
