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


def random_crop(image: np.ndarray, target: np.ndarray, size: int, rng: np.random.Generator, fill: int):
    """A size x size crop at a uniform position; images smaller than `size` are reflect-padded (target: fill)."""
    image, target = pad_to_at_least(image, target, size, fill)
    height, width = target.shape
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return image[top : top + size, left : left + size], target[top : top + size, left : left + size]


def pad_to_at_least(image: np.ndarray, target: np.ndarray, size: int, fill: int):
    pad_h = max(0, size - image.shape[0])
    pad_w = max(0, size - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image, target
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(image.shape[:2]) > 1 else "edge")
    target = np.pad(target, ((0, pad_h), (0, pad_w)), constant_values=fill)
    return image, target


def random_flip_rotate(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig):
    if rng.random() < cfg.hflip:
        image, target = image[:, ::-1], target[:, ::-1]
    if rng.random() < cfg.vflip:
        image, target = image[::-1], target[::-1]
    if cfg.rot90:
        turns = int(rng.integers(0, 4))
        image, target = np.rot90(image, turns), np.rot90(target, turns)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


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
