"""The common on-disk layout: <root>/<Dataset>/<split>/{images,labels}/<id>.png (+ index.csv per split)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass(frozen=True)
class SplitLayout:
    """Paths of one split of one dataset in the common layout."""

    root: Path
    dataset: str
    split: str

    @classmethod
    def of(cls, root: str | os.PathLike, dataset: str, split: str) -> SplitLayout:
        return cls(Path(root), dataset, split)

    @property
    def dir(self) -> Path:
        return self.root / self.dataset / self.split

    @property
    def images_dir(self) -> Path:
        return self.dir / "images"

    @property
    def labels_dir(self) -> Path:
        return self.dir / "labels"

    @property
    def index_csv(self) -> Path:
        return self.dir / "index.csv"

    def image_path(self, image_id: str) -> Path:
        return _find_with_suffix(self.images_dir, image_id)

    def label_path(self, image_id: str) -> Path:
        return _find_with_suffix(self.labels_dir, image_id)

    def ids(self) -> list[str]:
        """Sorted image ids of the split; a clear error when the folder is missing or empty."""
        if not self.images_dir.is_dir():
            raise FileNotFoundError(
                f"no images folder {self.images_dir}: expected <root>/<Dataset>/<split>/images/<id>.png "
                f"(root={self.root}, dataset={self.dataset}, split={self.split}); set paths.data_dir or data.root"
            )
        ids = sorted(p.stem for p in self.images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not ids:
            raise FileNotFoundError(f"images folder {self.images_dir} holds no .png/.tif image")
        return ids

    def index(self) -> pd.DataFrame | None:
        """index.csv as a DataFrame indexed by id (string), or None when the split has none."""
        if not self.index_csv.is_file():
            return None
        frame = pd.read_csv(self.index_csv, dtype={"id": str})
        if "id" not in frame.columns:
            raise ValueError(f"{self.index_csv} has no 'id' column; columns are {list(frame.columns)}")
        return frame.set_index("id")


def _find_with_suffix(folder: Path, image_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no file for id '{image_id}' in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
