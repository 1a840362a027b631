"""The one dataset type every adapter produces, and the canonical expression classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RAF-DB order: every report, confusion matrix and label index in dicefer uses it.
CLASSES: tuple[str, ...] = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
# A dataset's own extra class (CK+, AffectNet) comes after the seven, so indices 0..6 never move.
CONTEMPT = "Contempt"

# The names datasets use for the canonical classes, lower case.
_ALIASES = {
    "Surprise": ("surprise", "surprised"),
    "Fear": ("fear", "fearful", "afraid"),
    "Disgust": ("disgust", "disgusted"),
    "Happiness": ("happiness", "happy", "joy"),
    "Sadness": ("sadness", "sad"),
    "Anger": ("anger", "angry"),
    "Neutral": ("neutral",),
    CONTEMPT: ("contempt",),
}
_BY_ALIAS = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}


def canonical_class(name: str) -> str | None:
    """'happy', 'HAPPY', 'Happiness' -> 'Happiness'; None for a name that is no expression we know."""
    return _BY_ALIAS.get(name.strip().lower())


def class_list(with_contempt: bool) -> tuple[str, ...]:
    return CLASSES + (CONTEMPT,) if with_contempt else CLASSES


@dataclass
class FaceSet:
    """Decoded faces held in memory: uint8 images (N, H, W) for grayscale or (N, H, W, 3).

    `identity` is None when the dataset has no identity labels (FER2013, RAF-DB); `sources`
    names where each image came from (a file, or a CSV line), for messages and inspection; `split`
    is the dataset's name of the split (train, val, test), which the report keys its scores by.
    """

    images: np.ndarray
    expression: np.ndarray
    identity: np.ndarray | None
    name: str
    classes: tuple[str, ...] = CLASSES
    sources: tuple[str, ...] | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(f"{self.name}: images must be uint8 (N,H,W) or (N,H,W,C), got {self.images.dtype} {self.images.shape}")
        if len(self.expression) != n or (self.identity is not None and len(self.identity) != n):
            raise ValueError(f"{self.name}: {n} images but {len(self.expression)} expression labels")
        if self.sources is not None and len(self.sources) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.sources)} sources")
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

    def subset(self, index: np.ndarray, name: str | None = None) -> FaceSet:
        return FaceSet(
            self.images[index],
            self.expression[index],
            None if self.identity is None else self.identity[index],
            name or self.name,
            self.classes,
            None if self.sources is None else tuple(self.sources[i] for i in np.arange(len(self))[index]),
            self.split,
        )
