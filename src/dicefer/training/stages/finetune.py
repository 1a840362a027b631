"""Fine-tuning E with the classifier after Stage 3 (stage3.finetune_epochs; not in the paper)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from dicefer.config import L1Scale
from dicefer.training.accelerator import adam
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.objectives import classification_logs, consistency_l1


class Finetune(Stage):
    """E and the classifier together on same-expression pairs, from the paper's result (the Stage 1
    code and a classifier fitted on it): cross-entropy, plus delta x the Stage 1 L1 between pair
    codes, which holds identity out of E while the cross-entropy on confounded training identities
    would pull it back in. Learning rate: a tenth of Stage 1's."""

    name = "finetune"
    images_per_item = 2
    saves = ("expression", "identity", "classifier")

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        cfg = setup.cfg
        self.loader, self.epochs = setup.pairs, cfg.stage3.finetune_epochs
        self.expression = setup.expression.requires_grad_(True)
        self.identity, self.classifier = setup.identity, setup.classifier
        self.delta, self.l1_scale = cfg.stage3.finetune_delta, cfg.stage1.l1_scale
        self.optimizers = (adam([*self.expression.parameters(), *self.classifier.parameters()], lr=cfg.finetune_lr),)
        self.net = SimpleNamespace(expression=setup.trained(self.expression), classifier=setup.ddp(self.classifier))

    def scored(self):
        return self.expression, self.classifier

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        self.expression.train(); self.classifier.train()
        return finetune_objective(self.net.expression, self.net.classifier, *batch, self.delta, self.l1_scale)


def finetune_objective(encoder: nn.Module, classifier: nn.Module, x_m: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor,
                       delta: float, l1_scale: L1Scale) -> StepResult:
    """Cross-entropy on both images of every pair, plus delta x the pair L1 of their codes."""
    codes = encoder(torch.cat([x_m, x_n]))[0]
    logits = classifier(codes)
    labels = torch.cat([y, y])
    ce = F.cross_entropy(logits, labels)
    l1 = consistency_l1(codes, len(y), l1_scale)
    loss = ce + delta * l1
    return StepResult((loss,), classification_logs(loss, logits, labels, ce=ce, l1=l1))
