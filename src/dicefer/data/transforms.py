"""Preprocessing shared by training, evaluation and inference, and the paper's augmentation."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from dicefer.data.images import resized

PAPER_ANGLES = (-15, -10, -5, 0, 5, 10, 15)
AUGMENTATIONS = ("paper", "flip", "none")
LUMA = (19595, 38470, 7471)  # ITU-R 601 in 16-bit fixed point, exactly as PIL's convert("L")


def to_luma(images: np.ndarray) -> np.ndarray:
    """uint8 RGB(A) (..., C) -> uint8 grayscale (...), bit for bit what PIL's convert("L") gives the
    dataset cache, so that a face converted here and one decoded from a file are the same pixels."""
    rgb = images[..., :3].astype(np.uint32)
    return ((rgb @ np.array(LUMA, dtype=np.uint32) + 0x8000) >> 16).astype(np.uint8)


def to_uint8_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> uint8 (C, size, size), resized exactly as the dataset cache resizes."""
    t = torch.tensor(resized(image, size))  # a copy: the input may be a read-only view
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def whiten(x: torch.Tensor) -> torch.Tensor:
    """Per-image whitening (zero mean, unit variance per image), as in the paper."""
    dims = tuple(range(x.ndim - 3, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True).clamp_min(1.0 / 255)
    return (x - mean) / std


def paper_augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A rotation from -15..15 degrees in 5-degree steps, with or without a horizontal flip."""
    angle = rng.choice(PAPER_ANGLES)
    if angle:
        x = F.rotate(x, angle, interpolation=F.InterpolationMode.BILINEAR)
    return F.horizontal_flip(x) if rng.random() < 0.5 else x


def random_crop(x: torch.Tensor, padding: int, rng: random.Random) -> torch.Tensor:
    """Shift the face by up to `padding` pixels each way: pad with the edge pixels, crop back to size."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [padding] * 4, padding_mode="edge")
    top, left = rng.randint(0, 2 * padding), rng.randint(0, 2 * padding)
    return padded[..., top:top + h, left:left + w]


@dataclass(frozen=True)
class Preprocess:
    """What every image goes through on its way to the network, built from data.* settings.

    augment: 'paper' (rotation + flip), 'flip' (horizontal flip only) or 'none'; crop_padding > 0
    adds a random crop; whiten: per-image whitening (the paper) or a plain scale to [-1, 1].
    """

    augment: str = "none"
    crop_padding: int = 0
    whiten: bool = True

    @classmethod
    def for_training(cls, data) -> Preprocess:
        return cls(data.augment, data.crop_padding, data.whiten)

    @classmethod
    def for_evaluation(cls, data) -> Preprocess:
        """No augmentation: the faces as they are, scaled as in training."""
        return cls("none", 0, data.whiten)

    def __call__(self, x: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
        """float (C, H, W) in [0, 1] (or a batch of them) -> the network's input; rng is used only by augmentation."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, rng)
        if self.augment == "paper":
            x = paper_augment(x, rng)
        elif self.augment == "flip" and rng.random() < 0.5:
            x = F.horizontal_flip(x)
        return whiten(x) if self.whiten else x * 2 - 1
