"""Converters from native dataset releases to the common layout (`python -m cellseg.data.convert`).

Each converter reads a local copy of a release (never downloads), writes `<dst>/<Dataset>/<split>/{images,labels}/`
+ index.csv + SOURCE.md + MANIFEST.sha256 into a temporary folder and renames it into place when everything passed.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cellseg.data.convert.coin_layout import convert_brca, convert_coin, decode_coin_mask, encode_coin_mask
from cellseg.data.convert.cryonuseg import ANNOTATOR_DIRS, convert_cryonuseg
from cellseg.data.convert.dsb2018 import convert_dsb2018, merge_binary_masks, rle_decode, rle_encode
from cellseg.data.convert.matfiles import convert_ccrcc, convert_consep, convert_cpm17, read_mat_instance_map
from cellseg.data.convert.monusac import convert_monusac
from cellseg.data.convert.monuseg import convert_monuseg, rasterise_aperio_xml
from cellseg.data.convert.pannuke import convert_pannuke
from cellseg.data.convert.tnbc import convert_tnbc

__all__ = [
    "CONVERTERS", "convert", "main", "rasterise_aperio_xml", "rle_decode", "rle_encode", "decode_coin_mask",
    "encode_coin_mask", "merge_binary_masks", "read_mat_instance_map",
]

CONVERTERS: dict[str, Callable[..., Path]] = {
    "monuseg": convert_monuseg,
    "dsb2018": convert_dsb2018,
    "tnbc": convert_tnbc,
    "cryonuseg": convert_cryonuseg,
    "cpm17": convert_cpm17,
    "pannuke": convert_pannuke,
    "consep": convert_consep,
    "monusac": convert_monusac,
    "ccrcc": convert_ccrcc,
    "brca": convert_brca,
    "coin": convert_coin,
}
# Options that only some converters take: CLI flag -> the datasets that accept it.
_SPECIFIC_OPTIONS = {"name": ("coin",), "annotator": ("cryonuseg",), "seed": ("dsb2018",)}


def dataset_key(dataset: str) -> str:
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in CONVERTERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(CONVERTERS)}")
    return key


def convert(dataset: str, src: str | os.PathLike, dst: str | os.PathLike, **options) -> Path:
    """Convert the native release at `src` of `dataset` into `<dst>/<Dataset>`; returns that folder."""
    return CONVERTERS[dataset_key(dataset)](src, dst, **options)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert a local copy of a native nuclei dataset release to the common layout "
        "<dst>/<Dataset>/<split>/{images,labels}/<id>.png (+ index.csv, SOURCE.md, MANIFEST.sha256). Never downloads.",
    )
    parser.add_argument("dataset", type=str.lower, choices=sorted(CONVERTERS) + ["cpm-17"])
    parser.add_argument("--src", required=True, type=Path, help="folder of the downloaded native release")
    parser.add_argument("--dst", "--out", dest="dst", required=True, type=Path, help="root of the common layout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <dst>/<Dataset>")
    parser.add_argument("--no-count-check", dest="check_counts", action="store_false",
                        help="do not compare image counts with the official release (partial or modified copies)")
    parser.add_argument("--name", help="coin only: dataset folder name (default: the name of --src)")
    parser.add_argument("--annotator", choices=sorted(ANNOTATOR_DIRS), help="cryonuseg only (default annotator1)")
    parser.add_argument("--seed", type=int, help="dsb2018 only: k-means seed of the modality naming (default 0)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    key = dataset_key(args.dataset)
    options = {"overwrite": args.overwrite, "check_counts": args.check_counts}
    for option, datasets in _SPECIFIC_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if key not in datasets:
            parser.error(f"--{option} applies to {', '.join(datasets)} only, not {key}")
        options[option] = value
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = convert(key, args.src, args.dst, **options)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        parser.exit(2, f"error: {err}\n")
    print(out)
    return 0
