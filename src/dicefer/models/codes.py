"""Faces -> codes: the one way a FaceSet reaches an encoder outside training's own batches (Stage 3,
the monitor, evaluation and the int8 calibration all feed faces this way)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dicefer.data.base import FaceSet
from dicefer.data.torch_datasets import evaluation_faces
from dicefer.data.transforms import FaceInput


@torch.no_grad()
def encode(model: torch.nn.Module, dataset: Dataset, batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """Codes (first output of an encoder, or a classifier's logits) for every item of `dataset`."""
    model.eval()
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        y = model(x.to(device))
        out.append((y[0] if isinstance(y, tuple) else y).float().cpu())
    return torch.cat(out).numpy()


def encode_faces(model: torch.nn.Module, faces: FaceSet, face: FaceInput, device: torch.device | str = "cpu") -> np.ndarray:
    """`model`'s output for every face, fed as evaluation feeds them (resized once, no augmentation)."""
    return encode(model, evaluation_faces(faces, face), device=device)
