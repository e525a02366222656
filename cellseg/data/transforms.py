"""Training-time geometry and colour augmentation, applied jointly to an image and its target map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.1
    hue: float = 0.03
    colour_p: float = 0.5


@dataclass(frozen=True)
class CropGeometry:
    """Where a training crop came from and how it was flipped/rotated, so per-image state maps (e.g. S2L's
    EMA of predictions, kept by the LightningModule) can be cut and turned exactly like the crop."""

    top: int
    left: int
    size: int
    hflip: bool = False
    vflip: bool = False
    rot90: int = 0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.top, self.left, self.size, self.hflip, self.vflip, self.rot90])

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> CropGeometry:
        top, left, size, hflip, vflip, rot = (int(v) for v in values)
        return cls(top, left, size, bool(hflip), bool(vflip), rot)


def sample_geometry(shape: tuple[int, int], size: int, rng: np.random.Generator, cfg: AugmentConfig | None) -> CropGeometry:
    """A uniform crop position (on the image padded up to `size`) and, with `cfg`, random flips and turns."""
    height, width = max(shape[0], size), max(shape[1], size)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    if cfg is None:
        return CropGeometry(top, left, size)
    hflip = bool(rng.random() < cfg.hflip)
    vflip = bool(rng.random() < cfg.vflip)
    turns = int(rng.integers(0, 4)) if cfg.rot90 else 0
    return CropGeometry(top, left, size, hflip, vflip, turns)


def apply_geometry(array: np.ndarray, geometry: CropGeometry, fill: float | None) -> np.ndarray:
    """Pad (reflect for images when `fill` is None, else constant), crop, flip and turn an H x W[ x C] array."""
    size = geometry.size
    pad_h, pad_w = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if pad_h or pad_w:
        pad = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
        if fill is None:
            array = np.pad(array, pad, mode="reflect" if min(array.shape[:2]) > 1 else "edge")
        else:
            array = np.pad(array, pad, constant_values=fill)
    out = array[geometry.top : geometry.top + size, geometry.left : geometry.left + size]
    if geometry.hflip:
        out = out[:, ::-1]
    if geometry.vflip:
        out = out[::-1]
    if geometry.rot90:
        out = np.rot90(out, geometry.rot90)
    return np.ascontiguousarray(out)


def colour_jitter(image: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8; torchvision's ColorJitter, seeded from the sample's generator."""
    if rng.random() >= cfg.colour_p:
        return image
    jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        return jitter(image)


def to_normalised_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB uint8 (H, W, 3) array or (3, H, W) tensor -> ImageNet-normalised float32 (3, H, W)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) if isinstance(image, np.ndarray) else image
    tensor = tensor.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def denormalise(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of to_normalised_tensor, for overlays: (3, H, W) -> uint8 (H, W, 3)."""
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(3, 1, 1)
    image = (tensor * std + mean).clamp(0, 1) * 255
    return image.round().byte().permute(1, 2, 0).cpu().numpy()
