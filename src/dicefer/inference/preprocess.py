"""From a detected face to the network's input, exactly as evaluation feeds the encoder.

A run trained on 48x48 grayscale whitened faces must see 48x48 grayscale whitened faces: the
same luma conversion and the same resize as the dataset cache (PIL's), the same pixel scaling,
all as the run's FaceInput (its backbone's declaration) says.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from dicefer.data.images import channels
from dicefer.data.transforms import SCALINGS, FaceInput, Preprocess
from dicefer.errors import UserError
from dicefer.paths import shown

SCALING_TEXT = {"whiten": "per-image whitening (x - mean) / max(std, 1/255)", "centred": "(255 x - 127.5) / 128"}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects; stored in an ONNX export's metadata so it needs no run folder."""

    face: FaceInput
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return self.face.channels

    @property
    def grayscale(self) -> bool:
        return self.face.grayscale

    def example(self, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` random inputs of the network's shape (for tracing and parity checks)."""
        return torch.randn(n, *self.face.shape, generator=generator)

    def batch(self, crops: list[np.ndarray]) -> torch.Tensor:
        """uint8 crops (H, W) or (H, W, 3) of any size -> float32 (N, C, size, width), as evaluation feeds them."""
        x = torch.stack([self.face.to_uint8(channels(c, self.grayscale)) for c in crops])
        return Preprocess(self.face)(x.float().div_(255.0), rng=None)

    def to_metadata(self) -> dict[str, str]:
        f = self.face
        return {"input_size": str(f.size), "input_width": str(f.width), "grayscale": json.dumps(f.grayscale),
                "channels": str(f.channels), "classes": json.dumps(list(self.classes)), "scaling": f.scaling,
                "preprocessing": "face crop (square) -> ITU-R 601 luma if grayscale (as PIL's convert('L')) -> PIL "
                                 "bilinear resize to input_size x input_size (antialiased when shrinking), then to "
                                 "input_size high x input_width wide if they differ, uint8 -> /255 -> "
                                 + SCALING_TEXT[f.scaling]}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> InputSpec:
        """Exports written before backbones had their own input carry no input_width or scaling: square, whitened."""
        try:
            size = int(meta["input_size"])
            face = FaceInput(size, int(meta.get("input_width", size)), json.loads(meta["grayscale"]),
                             meta.get("scaling", "whiten"))
            listed = json.loads(meta["classes"])
            if not isinstance(listed, list):
                raise TypeError("classes is not a list")
            classes = tuple(listed)
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(f"the model's dicefer metadata is damaged ({type(err).__name__}: {str(err)[:80]}): "
                            "export it again with `dicefer export`") from None
        if (face.scaling not in SCALINGS or not (0 < face.size <= 4096 and 0 < face.width <= 4096) or not classes
                or not isinstance(face.grayscale, bool) or not all(isinstance(c, str) for c in classes)):
            raise UserError(f"the model's dicefer metadata is damaged (input {face.size}x{face.width}, scaling "
                            f"{shown(face.scaling)[:40]}, {len(classes)} classes): export it again with `dicefer export`")
        return cls(face, classes)
