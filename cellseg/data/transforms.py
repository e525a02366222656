"""Training-time geometry and colour augmentation, applied jointly to an image and its target map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
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
    # ShiftScaleRotate of the crop (albumentations' defaults as S2L uses them, border reflect-101); off by default
    affine_p: float = 0.0
    shift: float = 0.0625      # fraction of the crop size
    scale: float = 0.1         # zoom factor drawn from [1 - scale, 1 + scale]
    rotate: float = 45.0       # degrees, drawn from [-rotate, rotate]


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
    angle: float = 0.0         # degrees, counter-clockwise, about the crop centre (after flips and turns)
    zoom: float = 1.0
    shift_y: float = 0.0       # pixels
    shift_x: float = 0.0

    @property
    def has_affine(self) -> bool:
        return (self.angle, self.zoom, self.shift_y, self.shift_x) != (0.0, 1.0, 0.0, 0.0)

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.top, self.left, self.size, self.hflip, self.vflip, self.rot90, self.angle,
                             self.zoom, self.shift_y, self.shift_x], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> CropGeometry:
        top, left, size, hflip, vflip, rot = (int(v) for v in values[:6])
        angle, zoom, shift_y, shift_x = (float(v) for v in values[6:10]) if len(values) >= 10 else (0.0, 1.0, 0, 0)
        return cls(top, left, size, bool(hflip), bool(vflip), rot, angle, zoom, shift_y, shift_x)


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
    if not (cfg.affine_p > 0 and rng.random() < cfg.affine_p):
        return CropGeometry(top, left, size, hflip, vflip, turns)
    angle = float(rng.uniform(-cfg.rotate, cfg.rotate))
    zoom = float(rng.uniform(1.0 - cfg.scale, 1.0 + cfg.scale))
    shift_y, shift_x = (float(v) * size for v in rng.uniform(-cfg.shift, cfg.shift, size=2))
    return CropGeometry(top, left, size, hflip, vflip, turns, angle, zoom, shift_y, shift_x)


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
    out = np.ascontiguousarray(out)
    return warp_affine(out, geometry, nearest=fill is not None) if geometry.has_affine else out


def warp_affine(array: np.ndarray, geometry: CropGeometry, nearest: bool) -> np.ndarray:
    """Rotate, zoom and shift an H x W[ x C] crop about its centre, reflect-101 borders (scipy 'mirror');
    images bilinear, target and state maps nearest (their values are classes, ignore or NaN)."""
    theta = np.deg2rad(geometry.angle)
    rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])  # (row, col), inverse
    matrix = rotation / geometry.zoom  # output -> input coordinates (the inverse of the forward turn)
    centre = (np.array(array.shape[:2], dtype=np.float64) - 1) / 2
    offset = centre - matrix @ (centre + np.array([geometry.shift_y, geometry.shift_x]))
    order = 0 if nearest else 1

    def warp(plane: np.ndarray) -> np.ndarray:
        source = plane if nearest else plane.astype(np.float32)
        warped = ndi.affine_transform(source, matrix, offset=offset, order=order, mode="mirror")
        if nearest or not np.issubdtype(plane.dtype, np.integer):
            return warped.astype(plane.dtype, copy=False)
        limits = np.iinfo(plane.dtype)
        return np.clip(np.rint(warped), limits.min, limits.max).astype(plane.dtype)

    if array.ndim == 2:
        return warp(array)
    return np.stack([warp(array[..., c]) for c in range(array.shape[2])], axis=-1)


def colour_jitter(image: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8, or float in [0, 1] -> float (images deeper than 8 bits); torchvision's
    ColorJitter, seeded from the sample's generator."""
    if rng.random() >= cfg.colour_p:
        return image
    jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        return jitter(image)


def to_normalised_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB (H, W, 3) array or (3, H, W) tensor -> ImageNet-normalised float32 (3, H, W).

    uint8 is divided by 255 (the 8-bit path); a float image is taken as already in [0, 1] (deeper images, see
    cellseg/data/intensity.py); any other dtype (e.g. an unconverted uint16 image) is refused.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) if isinstance(image, np.ndarray) else image
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.is_floating_point():
        tensor = tensor.float()
    else:
        raise ValueError(f"image tensor has dtype {tensor.dtype}; expected uint8 or float in [0, 1] "
                         "(convert deeper images with cellseg.data.intensity.to_model_range)")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def denormalise(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of to_normalised_tensor, for overlays: (3, H, W) -> uint8 (H, W, 3)."""
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(3, 1, 1)
    image = (tensor * std + mean).clamp(0, 1) * 255
    return image.round().byte().permute(1, 2, 0).cpu().numpy()
