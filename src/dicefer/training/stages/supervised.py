"""The supervised baseline: the same encoder and classifier trained end to end with cross-entropy."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.nn import functional as F

from dicefer.training.accelerator import adam
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.objectives import classification_logs


class Supervised(Stage):
    """One stage of as many epochs as DICE-FER's encoders train (supervised.epochs), at Stage 1's
    learning rate, on single augmented faces in batches of 2 x batch_size."""

    name = "supervised"
    saves = ("expression", "classifier")

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        cfg = setup.cfg
        self.expression = setup.expression = setup.encoder()
        self.classifier = setup.classifier
        self.epochs = cfg.supervised_epochs()
        self.optimizers = (adam([*self.expression.parameters(), *self.classifier.parameters()], lr=cfg.stage1.lr),)
        self.loader = setup.single_faces()
        self.net = SimpleNamespace(expression=setup.trained(self.expression), classifier=setup.ddp(self.classifier))

    def scored(self):
        return self.expression, self.classifier

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        self.expression.train(); self.classifier.train()
        x, y = batch
        logits = self.net.classifier(self.net.expression(x)[0])
        loss = F.cross_entropy(logits, y)
        return StepResult((loss,), classification_logs(loss, logits, y))
