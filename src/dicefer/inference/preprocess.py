"""From a detected face to the network's input, exactly as evaluation feeds the encoder.

A run trained on 48x48 grayscale whitened faces must see 48x48 grayscale whitened faces: the
same luma conversion and the same resize as the dataset cache (PIL's), the same per-image whitening.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from dicefer.data.images import channels
from dicefer.data.transforms import Preprocess, to_uint8_input


@dataclass(frozen=True)
class InputSpec:
    """What a model expects; stored in an ONNX export's metadata so it needs no run folder."""

    size: int
    grayscale: bool
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def batch(self, crops: list[np.ndarray]) -> torch.Tensor:
        """uint8 crops (H, W) or (H, W, 3) of any size -> float32 (N, C, size, size), as evaluation feeds them."""
        x = torch.stack([to_uint8_input(channels(c, self.grayscale), self.size) for c in crops])
        return Preprocess()(x.float().div_(255.0), rng=None)

    def to_metadata(self) -> dict[str, str]:
        return {"input_size": str(self.size), "grayscale": json.dumps(self.grayscale), "channels": str(self.channels),
                "classes": json.dumps(list(self.classes)), "whiten": "true",
                "preprocessing": "face crop -> ITU-R 601 luma if grayscale (as PIL's convert('L')) -> PIL "
                                 "bilinear resize to input_size (antialiased when shrinking), uint8 -> /255 -> "
                                 + "per-image whitening (x - mean) / max(std, 1/255)"}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> InputSpec:
        return cls(int(meta["input_size"]), json.loads(meta["grayscale"]), tuple(json.loads(meta["classes"])))

