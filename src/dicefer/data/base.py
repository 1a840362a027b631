"""The one dataset type every adapter produces, and the canonical expression classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RAF-DB order: every report, confusion matrix and label index in dicefer uses it.
CLASSES: tuple[str, ...] = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")


@dataclass
class FaceSet:
    """Decoded faces held in memory: uint8 images (N, H, W) for grayscale or (N, H, W, 3).

    `identity` is None when the dataset has no identity labels (FER2013, RAF-DB).
    """

    images: np.ndarray
    expression: np.ndarray
    identity: np.ndarray | None
    name: str
    classes: tuple[str, ...] = CLASSES

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(f"{self.name}: images must be uint8 (N,H,W) or (N,H,W,C), got {self.images.dtype} {self.images.shape}")
        if len(self.expression) != n or (self.identity is not None and len(self.identity) != n):
            raise ValueError(f"{self.name}: {n} images but {len(self.expression)} expression labels")
        self.expression = np.asarray(self.expression, dtype=np.int64)
        if self.identity is not None:
            self.identity = np.asarray(self.identity, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[3]

    @property
    def size(self) -> int:
        return self.images.shape[1]

    def subset(self, index: np.ndarray, name: str | None = None) -> "FaceSet":
        return FaceSet(
            self.images[index],
            self.expression[index],
            None if self.identity is None else self.identity[index],
            name or self.name,
            self.classes,
        )
