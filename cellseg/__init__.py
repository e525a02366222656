"""cellseg: weakly-supervised nuclei instance segmentation on Hydra + PyTorch Lightning."""

__version__ = "0.1.0"
