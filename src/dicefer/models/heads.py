"""The shuffle discriminator of Stage 2 and the expression classifier of Stage 3."""
from __future__ import annotations

import torch
from torch import nn


class ShuffleDiscriminator(nn.Module):
    """D(E, I): 3 fully connected layers telling joint (E_M, I_M) from (E_M, shuffled I). Returns logits."""

    def __init__(self, code_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * code_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([e, i], dim=1)).squeeze(1)


class Classifier(nn.Module):
    """Two hidden layers on the frozen expression code.

    The code is standardised with statistics of the training codes, held as buffers, so that the
    classifier does not depend on the code's scale and the exported model carries them.
    """

    def __init__(self, code_dim: int = 64, num_classes: int = 7, hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(code_dim))
        self.register_buffer("std", torch.ones(code_dim))
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    @torch.no_grad()
    def fit_standardisation(self, codes: torch.Tensor) -> None:
        self.mean.copy_(codes.mean(0))
        self.std.copy_(codes.std(0).clamp_min(1e-6))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net((code - self.mean) / self.std)
