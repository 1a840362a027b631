"""torch Datasets over a FaceSet: single images (evaluation, supervised) and same-expression pairs."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from dicefer.data.base import FaceSet
from dicefer.data.images import to_luma
from dicefer.data.transforms import Preprocess, to_uint8_input


def resize_all(faces: FaceSet, size: int, grayscale: bool) -> torch.Tensor:
    """Decode once: uint8 (N, C, size, size), C = 1 if grayscale else 3, so epochs only pay for augmentation."""
    images = faces.images
    if grayscale and images.ndim == 4:
        images = to_luma(images)
    elif not grayscale and images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=3)
    if images.shape[1] == size and images.shape[2] == size:
        t = torch.from_numpy(np.ascontiguousarray(images))
        return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()
    return torch.stack([to_uint8_input(img, size) for img in images])


def evaluation_faces(faces: FaceSet, size: int, grayscale: bool) -> Faces:
    """The faces as evaluation (and Stage 3, and predict) see them: resized once, no augmentation."""
    return Faces(resize_all(faces, size, grayscale), faces.expression, Preprocess())


class Faces(Dataset):
    """Faces through `preprocess` (Preprocess.for_training or .for_evaluation), reproducible per epoch."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, preprocess: Preprocess, seed: int = 0) -> None:
        self.images, self.labels = images, torch.as_tensor(labels)
        self.preprocess, self.seed = preprocess, seed
        self.rng = random.Random(seed)

    def set_epoch(self, epoch: int) -> None:
        self.rng = random.Random(f"{self.seed}-{epoch}")

    def image(self, i: int) -> torch.Tensor:
        return self.preprocess(self.images[i].float().div_(255.0), self.rng)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(i), self.labels[i]


class FacePairs(Faces):
    """Indexed by (i, j) pairs from SameExpressionPairs: returns (x_i, x_j, label)."""

    def __getitem__(self, pair: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, j = pair
        return self.image(i), self.image(j), self.labels[i]
