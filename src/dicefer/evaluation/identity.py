"""Identity on data without identity labels: how much of a face-recognition network's embedding a
code predicts on held-out faces.

A face-recognition network's embedding is built to tell people apart, so what a code predicts of
it is, mostly, identity. The reading: the embedding (L2-normalised) with the part that the
expression label explains removed (its class means, fitted on the fitting half), so that an
expression code is not charged for knowing the expression; a ridge map from the standardised code
fitted on one half of the faces and scored on the other, and the other way round. The score is
the held-out R^2 pooled over the embedding's dimensions (1 - residual sum of squares / total sum
of squares, both summed over dimensions): 0 when the code predicts nothing of it, 1 when it
predicts all of it. `face_embedding_r2` is the same without removing the class means.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

from dicefer.data.base import FaceSet
from dicefer.data.transforms import FaceInput
from dicefer.models.codes import encode_faces
from dicefer.models.backbones import MOBILEFACENET_WHOLE
from dicefer.models.mobilefacenet import MobileFaceNet
from dicefer.models.pretrained import load_trunk, read_state_dict

REFERENCE_INPUT = FaceInput(112, 96, grayscale=False, scaling="centred")  # MobileFaceNet's own: RGB 112x96
ALPHAS = np.logspace(-3, 4, 15)


def reference_network(path: Path) -> MobileFaceNet:
    """The whole face-recognition MobileFaceNet, embedding included, from a checkpoint in its layout."""
    net = MobileFaceNet()
    load_trunk(net, read_state_dict(Path(path).expanduser()), str(path), MOBILEFACENET_WHOLE)
    return net.eval()


def reference_embeddings(path: Path, faces: FaceSet) -> np.ndarray:
    """Every face's L2-normalised embedding, each face fed at the network's own input (gray faces as R = G = B)."""
    with torch.random.fork_rng(devices=[]):
        embedding = encode_faces(reference_network(path), faces, REFERENCE_INPUT)
    return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)


def held_out_r2(codes: np.ndarray, target: np.ndarray, expression: np.ndarray | None, seed: int = 0) -> float:
    """Mean over the two halves of a random split of the pooled R^2 of a ridge map codes -> target,
    fitted on one half and scored on the other; with `expression`, the target's class means (fitted
    on the fitting half) are removed from both halves first."""
    order = np.random.default_rng(seed).permutation(len(codes))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    scores = []
    for fit, held in (halves, halves[::-1]):
        y_fit, y_held = target[fit].astype(np.float64), target[held].astype(np.float64)
        if expression is not None:
            means = {c: y_fit[expression[fit] == c].mean(axis=0) for c in np.unique(expression[fit])}
            overall = y_fit.mean(axis=0)
            y_fit = y_fit - np.stack([means[c] for c in expression[fit]])
            y_held = y_held - np.stack([means.get(c, overall) for c in expression[held]])
        scale = StandardScaler().fit(codes[fit])
        ridge = RidgeCV(alphas=ALPHAS).fit(scale.transform(codes[fit]), y_fit)
        residual = ((y_held - ridge.predict(scale.transform(codes[held]))) ** 2).sum()
        total = ((y_held - y_fit.mean(axis=0)) ** 2).sum()
        scores.append(1.0 - residual / total)
    return float(np.mean(scores))


def identity_reading(codes: dict[str, np.ndarray], embedding: np.ndarray, expression: np.ndarray, seed: int = 0) -> dict:
    """identity_r2 (expression's class means removed) and face_embedding_r2 for each code (E, I, ...)."""
    return {"identity_r2": {name: held_out_r2(code, embedding, expression, seed) for name, code in codes.items()},
            "face_embedding_r2": {name: held_out_r2(code, embedding, None, seed) for name, code in codes.items()}}
