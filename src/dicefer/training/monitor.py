"""`monitor=true`: the evaluation split scored after every epoch, for curves of accuracy against time."""
from __future__ import annotations

import time

import torch

from dicefer.config import TrainConfig
from dicefer.data.base import FaceSet
from dicefer.data.torch_datasets import evaluation_faces
from dicefer.models import build
from dicefer.models.codes import encode


class EvalMonitor:
    """Accuracy on the evaluation split after an epoch (`monitor`), for curves of accuracy against
    wall-clock time. It draws no random numbers, so a monitored run trains exactly as an unmonitored
    one; it never chooses a model."""

    def __init__(self, faces: FaceSet, cfg: TrainConfig, device: torch.device) -> None:
        self.faces = evaluation_faces(faces, build.face_input(cfg))
        self.device = device

    def __call__(self, encoder: torch.nn.Module, head: torch.nn.Module) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            logits = encode(torch.nn.Sequential(_FirstOutput(encoder), head), self.faces, device=self.device)
        correct = logits.argmax(1) == self.faces.labels.numpy()
        return {"eval_accuracy": float(correct.mean()), "wall_clock": time.time()}


class _FirstOutput(torch.nn.Module):
    """An encoder's code without its feature map."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]
