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


@dataclass(frozen=True)
class Preprocess:
    """What every image goes through on its way to the network: the augmentation (data.augment:
    'paper' rotation + flip, 'flip' only, or 'none' for evaluation and predict), then per-image
    whitening as in the paper."""

    augment: str = "none"

    def __call__(self, x: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
        """float (C, H, W) in [0, 1] (or a batch of them) -> the network's input; rng is used only by augmentation."""
        if self.augment == "paper":
            x = paper_augment(x, rng)
        elif self.augment == "flip" and rng.random() < 0.5:
            x = F.horizontal_flip(x)
        return whiten(x)
