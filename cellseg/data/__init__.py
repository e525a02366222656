"""Datasets, the DataModule and weak-label generators over the common on-disk layout."""

from cellseg.data.datamodule import NucleiDataModule
from cellseg.data.layout import SplitLayout

__all__ = ["NucleiDataModule", "SplitLayout"]
