"""Writing a converted dataset in the common layout, atomically, with index.csv, SOURCE.md and a sha256 manifest.

A conversion stages everything in a hidden temporary folder beside the destination and renames it into place only
after every image was written and every count checked, so an interrupted or failed conversion leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from cellseg.utils.hashing import sha256_file
from cellseg.utils.io import MAX_UINT16_LABEL, read_label, write_image, write_label, write_mask_uint8

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.sha256"
SOURCE_NAME = "SOURCE.md"
INDEX_NAME = "index.csv"
CLASSES_NAME = "instance_classes.csv"
INDEX_BASE_COLUMNS = ("id", "height", "width", "nuclei", "modality", "mpp")
IMAGE_FILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+()\- ]*$")

ExpectedCounts = Mapping[str, int | Collection[int]]


@dataclass(frozen=True)
class SourceInfo:
    """Provenance of a native release, rendered into SOURCE.md."""

    title: str
    citation: str
    origin: str
    licence: str | None
    conversion: str
    notes: Sequence[str] = field(default_factory=tuple)


class CountMismatchError(ValueError):
    """The converted image counts differ from those of the official release."""


class DatasetWriter:
    """Stage `<dst>/<dataset>/<split>/{images,labels}/<id>.png` in a temporary folder; `finish` renames it into place.

    Use as a context manager: leaving the block without `finish` (an exception, a failed check) removes the
    temporary folder and leaves any existing `<dst>/<dataset>` untouched.
    """

    def __init__(self, dst: str | os.PathLike, dataset: str, *, overwrite: bool = False):
        self.dst = Path(dst)
        self.dataset = dataset
        self.final_dir = self.dst / dataset
        if self.final_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.final_dir} already exists; pass --overwrite (overwrite=True) to replace it")
        self.dst.mkdir(parents=True, exist_ok=True)
        self.stage_dir = Path(tempfile.mkdtemp(prefix=f".{dataset}.", suffix=".partial", dir=self.dst))
        os.chmod(self.stage_dir, 0o777 & ~_current_umask())  # mkdtemp makes it 0700; the result should be readable
        self.rows: dict[str, dict[str, dict]] = defaultdict(dict)
        self.classes: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
        self.finished = False

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            shutil.rmtree(self.stage_dir, ignore_errors=True)

    # -- adding images -------------------------------------------------------------------------------------------
    def add(
        self,
        split: str,
        image_id: str,
        image: np.ndarray,
        label: np.ndarray,
        *,
        source: str | os.PathLike,
        modality: str | None = None,
        mpp: float | None = None,
        ignore: np.ndarray | None = None,
        instance_classes: Mapping[int, str] | None = None,
        **fields,
    ) -> int:
        """Write one image and its instance map; returns the number of nuclei. `source` names the native file."""
        _check_id(image_id, source)
        if image_id in self.rows[split]:
            raise ValueError(f"{source}: image id '{image_id}' occurs twice in split '{split}'")
        image = _checked_image(image, source)
        label, instance_classes = _checked_label(label, image.shape[:2], source, instance_classes)
        split_dir = self.stage_dir / split
        write_image(split_dir / "images" / f"{image_id}.png", image)
        write_label(split_dir / "labels" / f"{image_id}.png", label)
        if ignore is not None:
            ignore = np.asarray(ignore)
            if ignore.shape != label.shape:
                raise ValueError(f"{source}: ignore mask has shape {ignore.shape}; expected {label.shape}")
            write_mask_uint8(split_dir / "labels" / f"{image_id}_ignore.png", ignore > 0)
        nuclei = int(np.count_nonzero(np.unique(label)))
        self.rows[split][image_id] = {
            "id": image_id, "height": label.shape[0], "width": label.shape[1], "nuclei": nuclei,
            "modality": modality, "mpp": mpp, **fields,
        }
        for instance, name in sorted((instance_classes or {}).items()):
            self.classes[split].append((image_id, int(instance), str(name)))
        return nuclei

    def set_field(self, split: str, image_id: str, key: str, value) -> None:
        """Set an index.csv field after the image was added (e.g. a modality computed over the whole dataset)."""
        self.rows[split][image_id][key] = value

    def image_ids(self, split: str) -> list[str]:
        return sorted(self.rows[split])

    # -- finishing -----------------------------------------------------------------------------------------------
    def finish(self, source: SourceInfo, *, src: str | os.PathLike, expected: ExpectedCounts | None = None) -> Path:
        """Check counts, write index.csv / instance_classes.csv / SOURCE.md / manifest and move the folder into place."""
        if not self.rows:
            raise ValueError(f"{self.dataset}: no image was found under {src}; nothing to convert")
        if expected is not None:
            check_expected_counts(self.dataset, {s: len(r) for s, r in self.rows.items()}, expected)
        self._verify_written_labels()
        for split, rows in self.rows.items():
            write_index_csv(self.stage_dir / split / INDEX_NAME, [rows[i] for i in sorted(rows)])
            if self.classes[split]:
                frame = pd.DataFrame(sorted(self.classes[split]), columns=["id", "instance", "class"])
                frame.to_csv(self.stage_dir / split / CLASSES_NAME, index=False)
        (self.stage_dir / SOURCE_NAME).write_text(render_source_md(self.dataset, source, src, self.counts()))
        write_manifest(self.stage_dir)
        self._move_into_place()
        self.finished = True
        log.info("wrote %s (%s)", self.final_dir, self.counts())
        return self.final_dir

    def counts(self) -> dict[str, tuple[int, int]]:
        """(images, nuclei) per split."""
        return {s: (len(r), sum(row["nuclei"] for row in r.values())) for s, r in sorted(self.rows.items())}

    def _verify_written_labels(self) -> None:
        # Re-read every written label: the nucleus counts in index.csv are those of the files on disk.
        for split, rows in self.rows.items():
            for image_id in tqdm(sorted(rows), desc=f"verify {self.dataset}/{split}", unit="img", disable=None):
                path = self.stage_dir / split / "labels" / f"{image_id}.png"
                nuclei = int(np.count_nonzero(np.unique(read_label(path))))
                if nuclei != rows[image_id]["nuclei"]:
                    raise ValueError(f"{path}: re-read label has {nuclei} nuclei; {rows[image_id]['nuclei']} were written")

    def _move_into_place(self) -> None:
        backup = None
        if self.final_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{self.dataset}.", suffix=".old", dir=self.dst))
            os.replace(self.final_dir, backup / self.dataset)
        os.replace(self.stage_dir, self.final_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_id(image_id: str, source) -> None:
    if not isinstance(image_id, str) or not _SAFE_ID.match(image_id) or image_id.endswith("_ignore"):
        raise ValueError(f"{source}: image id {image_id!r} is not a plain file name (letters, digits, ._-+() and spaces)")


def _checked_image(image: np.ndarray, source) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{source}: image has shape {image.shape} and dtype {image.dtype}; expected H x W x 3 uint8")
    return np.ascontiguousarray(image)


def _checked_label(label: np.ndarray, shape: tuple[int, int], source, classes):
    label = np.asarray(label)
    if label.shape != shape:
        raise ValueError(f"{source}: label map has shape {label.shape}; expected {shape} (the image's height x width)")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{source}: label map has dtype {label.dtype}; expected integer instance ids")
    if label.size and label.min() < 0:
        raise ValueError(f"{source}: label map has negative ids; expected 0 = background, 1..N = nuclei")
    ids = np.unique(label)
    count = int(np.count_nonzero(ids))
    if count > MAX_UINT16_LABEL:
        raise ValueError(f"{source}: {count} instances; at most {MAX_UINT16_LABEL} fit a 16-bit label PNG")
    mapping = {int(i): int(i) for i in ids if i}
    if ids.size and ids[-1] > MAX_UINT16_LABEL:
        # Sparse ids above 65535 but few instances: renumber 1..N in id order (classes follow).
        label, forward, _ = relabel_sequential(label.astype(np.int64))
        mapping = dict(zip(mapping, (int(v) for v in forward[np.array(list(mapping))]), strict=True))
    if classes:
        classes = {mapping[int(old)]: name for old, name in classes.items() if int(old) in mapping}
    return label.astype(np.int32), classes


def check_expected_counts(dataset: str, found: Mapping[str, int], expected: ExpectedCounts) -> None:
    """Image counts per split against the official release; one error listing every mismatch."""
    problems = []
    for split in sorted(set(found) | set(expected)):
        accepted = expected.get(split)
        accepted = () if accepted is None else ((accepted,) if isinstance(accepted, int) else tuple(accepted))
        if found.get(split, 0) not in accepted:
            wanted = " or ".join(map(str, accepted)) if accepted else "none (unexpected split)"
            problems.append(f"split '{split}' has {found.get(split, 0)} images, expected {wanted}")
    if problems:
        raise CountMismatchError(
            f"{dataset}: image counts differ from the official release: {'; '.join(problems)}. "
            "Pass --no-count-check (check_counts=False) to convert a partial or modified copy."
        )


def write_index_csv(path: Path, rows: Sequence[Mapping]) -> None:
    columns = list(INDEX_BASE_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    pd.DataFrame(list(rows), columns=columns).to_csv(path, index=False)


def write_manifest(folder: Path) -> Path:
    """`sha256sum -c`-compatible list of every file under `folder` (relative paths, sorted; itself excluded)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in tqdm(files, desc="sha256", disable=None)]
    path = folder / MANIFEST_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def verify_manifest(folder: str | os.PathLike) -> list[str]:
    """Relative paths whose sha256 differs from the manifest, or that are missing or unlisted ([] = all good)."""
    folder = Path(folder)
    listed = {}
    for line in (folder / MANIFEST_NAME).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    bad = sorted(present ^ set(listed))
    bad += sorted(rel for rel in present & set(listed) if sha256_file(folder / rel) != listed[rel])
    return bad


def render_source_md(dataset: str, info: SourceInfo, src, counts: Mapping[str, tuple[int, int]]) -> str:
    licence = info.licence or "not verified by this converter: check the release page before redistributing"
    lines = [
        f"# {dataset}: {info.title}", "",
        f"Citation: {info.citation}", f"Origin: {info.origin}", f"Licence: {licence}", "",
        f"Converted by `python -m cellseg.data.convert` from a local copy of the native release (`{Path(src).name}`).",
        f"Conversion: {info.conversion}", "",
        "| split | images | nuclei |", "|---|---|---|",
        *[f"| {split} | {n_images} | {n_nuclei} |" for split, (n_images, n_nuclei) in counts.items()], "",
        "Layout: `<split>/images/<id>.png` (RGB uint8), `<split>/labels/<id>.png` (16-bit instance ids, 0 = background),",
        "`<split>/index.csv`; MANIFEST.sha256 lists every file (`sha256sum -c MANIFEST.sha256`).",
    ]
    if info.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in info.notes]]
    return "\n".join(lines) + "\n"


# -- finding files in a native release ---------------------------------------------------------------------------
def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; expected {what}")
    return path


def find_child_dir(parent: Path, names: Iterable[str], what: str, *, required: bool = True) -> Path | None:
    """The child folder of `parent` whose name matches one of `names` (case-insensitive), or None / an error."""
    require_dir(parent, what)
    names = list(names)
    wanted = {n.lower() for n in names}
    matches = sorted(p for p in parent.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if len(matches) > 1:
        raise ValueError(f"{parent}: several folders match {what}: {[m.name for m in matches]}; keep only one")
    if matches:
        return matches[0]
    if required:
        found = sorted(p.name for p in parent.iterdir() if p.is_dir())
        raise FileNotFoundError(f"{parent}: no folder for {what}; expected one of {names}, found folders {found}")
    return None


def find_split_dirs(src: Path, split_names: dict[str, Sequence[str]], what: str) -> dict[str, Path]:
    """{split: folder} for the split folders present in `src` (names case-insensitive); an error when none is."""
    found = {s: find_child_dir(src, names, f"{what} {s}", required=False) for s, names in split_names.items()}
    if not any(found.values()):
        find_child_dir(src, [n for names in split_names.values() for n in names], f"a {what} split")
    return {split: folder for split, folder in found.items() if folder is not None}


def files_by_stem(folder: Path, suffixes: Sequence[str], *, recursive: bool = False) -> dict[str, Path]:
    """{stem: path} of the files with the given suffixes (compound suffixes such as .xml.gz allowed)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        name = path.name
        suffix = next((s for s in suffixes if name.lower().endswith(s)), None)
        if suffix is None or not path.is_file() or name.startswith("."):
            continue
        stem = name[: -len(suffix)]
        if stem in found:
            raise ValueError(f"two files for id '{stem}': {found[stem]} and {path}; keep only one")
        found[stem] = path
    return found


def pair_files(images: Mapping[str, Path], annotations: Mapping[str, Path], where: Path, what: str) -> list[str]:
    """Sorted ids present in both; an error naming the files that have no partner."""
    missing_annotation = sorted(set(images) - set(annotations))
    missing_image = sorted(set(annotations) - set(images))
    if missing_annotation or missing_image:
        parts = []
        if missing_annotation:
            parts.append(f"no {what} for images {[str(images[i]) for i in missing_annotation[:5]]}")
        if missing_image:
            parts.append(f"no image for {what} {[str(annotations[i]) for i in missing_image[:5]]}")
        raise FileNotFoundError(f"{where}: {'; '.join(parts)}")
    return sorted(images)


def progress(items, dataset: str, split: str):
    return tqdm(items, desc=f"{dataset}/{split}", unit="img", disable=None)
