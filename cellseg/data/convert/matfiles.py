"""Datasets whose labels are MATLAB `.mat` files: CPM-17 and CoNSeP (`inst_map`, HoVer-Net distribution) and CCRCC
(`instance_map`). Layout `<split dir>/{Images,Labels}/<id>.{png,mat}`.

Only MATLAB v5/v7 files are read (scipy.io.loadmat); v7.3 files are HDF5 and would need h5py, which is not a
dependency: such a file gets a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from cellseg.data.convert.common import (
    DatasetWriter,
    SourceInfo,
    files_by_stem,
    find_child_dir,
    find_split_dirs,
    pair_files,
    progress,
    require_dir,
)
from cellseg.utils.io import read_image

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg")


def load_mat(path: str | os.PathLike) -> dict:
    """Variables of a MATLAB v5/v7 file; a clear error for v7.3 (HDF5) and unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .mat file")
    with open(path, "rb") as handle:
        header = handle.read(128)
    if b"MATLAB 7.3" in header or header[:8] == b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) file; h5py is not installed. Re-save it as v7 "
                         "(MATLAB: save(f, '-v7')) or install h5py")
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError as err:  # scipy's own message for v7.3
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) file; h5py is not installed ({err})") from err
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({err})") from err


def _integer_map(array, path, key) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{path}: variable '{key}' has shape {array.shape}, dtype {array.dtype}; expected a 2-D numeric map")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{path}: variable '{key}' holds non-integer values; expected integer ids")
    if array.size and array.min() < 0:
        raise ValueError(f"{path}: variable '{key}' has negative values; expected 0 = background, 1..N")
    return array.astype(np.int64)


def read_mat_instance_map(path: str | os.PathLike, key: str) -> np.ndarray:
    """int32 instance map stored as variable `key` (e.g. 'inst_map', 'instance_map') of a .mat file."""
    variables = load_mat(path)
    if key not in variables:
        found = sorted(k for k in variables if not k.startswith("__"))
        raise ValueError(f"{path}: no variable '{key}'; found {found}")
    return _integer_map(variables[key], path, key).astype(np.int32)


def instance_classes(label: np.ndarray, class_map: np.ndarray) -> dict[int, int]:
    """Class of each instance = its most frequent non-zero class (ties: the lower class; 0 where none)."""
    label, class_map = np.asarray(label, np.int64).ravel(), np.asarray(class_map, np.int64).ravel()
    classes = {int(i): 0 for i in np.unique(label[label > 0])}
    both = (label > 0) & (class_map > 0)
    if not both.any():
        return classes
    base = int(class_map.max()) + 1
    pairs, counts = np.unique(label[both] * base + class_map[both], return_counts=True)
    instance, klass = pairs // base, pairs % base
    order = np.lexsort((klass, -counts, instance))  # by instance, then count descending, then class
    first = order[np.r_[True, instance[order][1:] != instance[order][:-1]]]
    classes.update({int(i): int(c) for i, c in zip(instance[first], klass[first], strict=True)})
    return classes


@dataclass(frozen=True)
class MatDatasetSpec:
    name: str
    split_dirs: Mapping[str, tuple[str, ...]]  # output split -> accepted native folder names
    key: str
    class_key: str | None
    class_names: Mapping[int, str] | None
    expected: Mapping[str, tuple[int, ...]]
    info: SourceInfo
    images_dir: str = "Images"
    labels_dir: str = "Labels"


CPM17 = MatDatasetSpec(
    name="CPM-17",
    split_dirs={"train": ("train", "Train"), "test": ("test", "Test")},
    key="inst_map", class_key=None, class_names=None,
    expected={"train": (32,), "test": (32,)},
    info=SourceInfo(
        title="CPM-17 (MICCAI 2017 Computational Precision Medicine), H&E, 500 x 500 / 600 x 600",
        citation="Vu et al., 'Methods for segmentation and classification of digital microscopy tissue images', "
        "Frontiers in Bioengineering and Biotechnology 7:53, 2019",
        origin="HoVer-Net distribution (github.com/vqdang/hover_net): cpm17/{train,test}/{Images,Labels}",
        licence=None,
        conversion="'inst_map' of each Labels/<id>.mat stored as a 16-bit PNG unchanged.",
    ),
)
CONSEP = MatDatasetSpec(
    name="CoNSeP",
    split_dirs={"train": ("Train",), "test": ("Test",)},
    key="inst_map", class_key="type_map",
    class_names={1: "other", 2: "inflammatory", 3: "healthy epithelial", 4: "dysplastic/malignant epithelial",
                 5: "fibroblast", 6: "muscle", 7: "endothelial"},
    expected={"train": (27,), "test": (14,)},
    info=SourceInfo(
        title="CoNSeP (colorectal nuclear segmentation and phenotypes), H&E, 40x, 1000 x 1000",
        citation="Graham et al., 'HoVer-Net', Medical Image Analysis 58, 101563, 2019",
        origin="warwick.ac.uk/fac/cross_fac/tia/data/hovernet: CoNSeP/{Train,Test}/{Images,Labels}",
        licence=None,
        conversion="'inst_map' of each Labels/<id>.mat stored as a 16-bit PNG unchanged; per-instance type (majority "
        "of 'type_map') in <split>/instance_classes.csv.",
    ),
)
CCRCC = MatDatasetSpec(
    name="CCRCC",
    split_dirs={"train": ("Train",), "val": ("Valid", "Val", "Validation"), "test": ("Test",)},
    key="instance_map", class_key="class_map",
    class_names={1: "grade 1", 2: "grade 2", 3: "grade 3", 4: "endothelial"},
    expected={"train": (700,), "val": (100,), "test": (200,)},
    info=SourceInfo(
        title="CCRCC nuclei grading (clear cell renal cell carcinoma), H&E, 512 x 512",
        citation="Gao et al., 'Nuclei grading of clear cell renal cell carcinoma in histopathological image by "
        "composite high-resolution network', MICCAI 2021",
        origin="authors' release: {Train,Valid,Test}/{Images,Labels}",
        licence=None,
        conversion="class-agnostic 'instance_map' of each Labels/<id>.mat stored as a 16-bit PNG unchanged; per-instance "
        "class (majority of 'class_map': 1-3 grade, 4 endothelial) in <split>/instance_classes.csv.",
    ),
)


def _class_names(variables: dict, spec: MatDatasetSpec, label: np.ndarray, path: Path) -> dict[int, str] | None:
    if spec.class_key is None or spec.class_key not in variables:
        return None
    class_map = _integer_map(variables[spec.class_key], path, spec.class_key)
    if class_map.shape != label.shape:
        raise ValueError(f"{path}: '{spec.class_key}' has shape {class_map.shape}; expected {label.shape} like '{spec.key}'")
    names = spec.class_names or {}
    return {i: names.get(c, str(c)) for i, c in instance_classes(label, class_map).items()}


def convert_mat_dataset(
    spec: MatDatasetSpec,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_counts: bool = True,
) -> Path:
    """`<src>/<split dir>/{Images,Labels}/<id>.{png,mat}` -> `<dst>/<name>/<split>`."""
    src = require_dir(Path(src), f"the {spec.name} release folder")
    split_dirs = find_split_dirs(src, spec.split_dirs, spec.name)
    with DatasetWriter(dst, spec.name, overwrite=overwrite) as writer:
        for split, folder in split_dirs.items():
            images = files_by_stem(find_child_dir(folder, [spec.images_dir], f"{spec.name} images"), IMAGE_SUFFIXES)
            labels = files_by_stem(find_child_dir(folder, [spec.labels_dir], f"{spec.name} labels"), (".mat",))
            for image_id in progress(pair_files(images, labels, folder, ".mat label"), spec.name, split):
                variables = load_mat(labels[image_id])
                if spec.key not in variables:
                    found = sorted(k for k in variables if not k.startswith("__"))
                    raise ValueError(f"{labels[image_id]}: no variable '{spec.key}'; found {found}")
                label = _integer_map(variables[spec.key], labels[image_id], spec.key)
                classes = _class_names(variables, spec, label, labels[image_id])
                image = read_image(images[image_id])
                writer.add(split, image_id, image, label, source=labels[image_id], modality="histopathology",
                           instance_classes=classes)
        return writer.finish(spec.info, src=src, expected=spec.expected if check_counts else None)


def convert_cpm17(src, dst, *, overwrite: bool = False, check_counts: bool = True) -> Path:
    """CPM-17 (HoVer-Net distribution): `<src>/{train,test}/{Images,Labels}` -> `<dst>/CPM-17/{train,test}`."""
    return convert_mat_dataset(CPM17, src, dst, overwrite=overwrite, check_counts=check_counts)


def convert_consep(src, dst, *, overwrite: bool = False, check_counts: bool = True) -> Path:
    """CoNSeP: `<src>/{Train,Test}/{Images,Labels}` -> `<dst>/CoNSeP/{train,test}` (+ instance_classes.csv)."""
    return convert_mat_dataset(CONSEP, src, dst, overwrite=overwrite, check_counts=check_counts)


def convert_ccrcc(src, dst, *, overwrite: bool = False, check_counts: bool = True) -> Path:
    """CCRCC: `<src>/{Train,Valid,Test}/{Images,Labels}` -> `<dst>/CCRCC/{train,val,test}` (+ instance_classes.csv)."""
    return convert_mat_dataset(CCRCC, src, dst, overwrite=overwrite, check_counts=check_counts)
