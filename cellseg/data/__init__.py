"""Datasets, the DataModule and weak-label generators over the common on-disk layout."""

from cellseg.data.layout import SplitLayout

__all__ = ["NucleiDataModule", "SplitLayout"]


def __getattr__(name: str):
    # Lazy: the converters and other light tools should not pay for importing Lightning.
    if name == "NucleiDataModule":
        from cellseg.data.datamodule import NucleiDataModule

        return NucleiDataModule
    raise AttributeError(f"module 'cellseg.data' has no attribute {name!r}")
