"""Stage 3: the classifier on the frozen expression code."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from dicefer.models.codes import encode_faces
from dicefer.training.accelerator import adam
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.objectives import classification_logs

BATCH = 256  # codes per step


class Stage3(Stage):
    """Cross-entropy of the classifier on E's codes of the training faces, encoded once (E is frozen),
    standardised with their statistics. Its epochs take seconds: checkpointed only at its end."""

    name = "stage3"
    every_epoch = False
    saves = ("expression", "identity", "classifier")

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        cfg = setup.cfg
        self.expression, self.identity, self.classifier = setup.expression, setup.identity.eval(), setup.classifier
        self.epochs = cfg.stage3.epochs
        codes = torch.from_numpy(encode_faces(self.expression, setup.faces, setup.face, setup.device))
        self.classifier.fit_standardisation(codes)
        self.optimizers = (adam(self.classifier.parameters(), lr=cfg.stage3.lr),)
        self.loader = setup.shuffled(TensorDataset(codes, torch.as_tensor(setup.faces.expression)), BATCH,
                                     cfg.seed + 3, False)
        self.net = SimpleNamespace(classifier=setup.ddp(self.classifier))

    def scored(self):
        return self.expression, self.classifier

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        self.classifier.train()
        z, y = batch
        logits = self.net.classifier(z)
        loss = F.cross_entropy(logits, y)
        return StepResult((loss,), classification_logs(loss, logits, y))
