"""torch Datasets over a FaceSet: single images (evaluation, supervised) and same-expression pairs."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from dicefer.data.base import FaceSet
from dicefer.data.images import to_luma
from dicefer.data.transforms import FaceInput, Preprocess


def resize_all(faces: FaceSet, face: FaceInput) -> torch.Tensor:
    """Decode once: uint8 (N, C, size, width) as `face` says, so epochs only pay for augmentation."""
    images = faces.images
    if face.grayscale and images.ndim == 4:
        images = to_luma(images)
    elif not face.grayscale and images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=3)
    if images.shape[1:3] == (face.size, face.width):
        t = torch.from_numpy(np.ascontiguousarray(images))
        return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()
    return torch.stack([face.to_uint8(img) for img in images])


def evaluation_faces(faces: FaceSet, face: FaceInput) -> Faces:
    """The faces as evaluation (and Stage 3, and predict) see them: resized once, no augmentation."""
    return Faces(resize_all(faces, face), faces.expression, Preprocess(face))


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
