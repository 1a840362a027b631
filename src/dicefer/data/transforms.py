"""Preprocessing shared by training, evaluation and inference, and the paper's augmentation."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from dicefer.data.images import resized

PAPER_ANGLES = (-15, -10, -5, 0, 5, 10, 15)
# How pixels reach a network; the names are recorded in runs and exports. 'whiten' is per-image
# standardising (the paper calls it whitening), not the whitening of codes in training/stages/.
SCALINGS = ("whiten", "centred")


@dataclass(frozen=True)
class FaceInput:
    """What an encoder takes, declared by its backbone (models/backbones.py) and the run's data
    settings: the face square as the dataset cache holds it (size x size), resized to size high and
    `width` wide, luma or RGB, pixels scaled by `scaling`: 'whiten' (per-image zero mean and unit
    variance, see standardise) or 'centred' ((pixel - 127.5) / 128, as face-recognition networks
    are trained). Training, evaluation, predict and an ONNX export all feed faces through this one
    object, so they cannot drift apart."""

    size: int
    width: int
    grayscale: bool
    scaling: str = "whiten"

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.width

    def to_uint8(self, square: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) or (H, W, 3) face -> uint8 (C, size, width): the cache's resize to the square,
        then to the network's width."""
        pixels = resized(square, self.size)
        if self.width != self.size:
            pixels = resized(pixels, self.size, self.width)
        t = torch.tensor(pixels)  # a copy: the input may be a read-only view
        return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """float pixels in [0, 1] -> the network's input."""
        return standardise(x) if self.scaling == "whiten" else (x * 255.0 - 127.5) / 128.0


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit variance per image, as in the paper (which calls it whitening)."""
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
    'paper' rotation + flip, 'flip' only, or 'none' for evaluation and predict), then the backbone's
    pixel scaling (FaceInput.scale)."""

    face: FaceInput
    augment: str = "none"

    def __call__(self, x: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
        """float (C, H, W) in [0, 1] (or a batch of them) -> the network's input; rng is used only by augmentation."""
        if self.augment == "paper":
            x = paper_augment(x, rng)
        elif self.augment == "flip" and rng.random() < 0.5:
            x = F.horizontal_flip(x)
        return self.face.scale(x)
