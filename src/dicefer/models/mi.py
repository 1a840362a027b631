"""Statistics networks (Deep InfoMax global and local critics) and the MI lower bounds.

Every critic scores all B x B combinations of a batch at once: entry [i, j] is T(image_i, code_j).
The diagonal holds the joint samples, the off-diagonal entries the "marginal" ones (an image
with the code of another item of the batch). Using all B(B-1) off-diagonal entries rather than
one rolled partner gives the estimators far more negatives for the same cost.
"""
from __future__ import annotations

import math
from typing import get_args

import torch
from torch import nn

from dicefer.config import Estimator


def _code_net(code_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(code_dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return nn.functional.normalize(a, dim=-1), nn.functional.normalize(b, dim=-1)


class GlobalCritic(nn.Module):
    """T(M, z) on the whole feature map of M and a code z: an encode-and-dot-product critic.

    Scores are cosine similarities divided by a temperature: bounded (so DV cannot overflow) and
    sharp enough to give the encoder a gradient from random initialisation.
    """

    def __init__(self, feature_channels: int, code_dim: int, dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(feature_channels, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
        )
        self.code = _code_net(code_dim, dim)
        self.temperature = temperature

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        image, code = _cosine(self.image(features), self.code(codes))
        return image @ code.T / self.temperature  # (B, B)


class CodeCritic(nn.Module):
    """T(M, z) = h(E(M)) . h(z) / temperature: M summarised by the encoder's own code for it.

    For cross-image MI (Stage 1) this global critic is a valid statistics network on (M, z) whose
    two sides share one projection h, so same-expression pairs score high as soon as the codes
    carry expression, and the marginal term pushes codes of different images apart: the code
    cannot collapse to a constant. Not for within-image MI, where T(M, E_M) would be trivial.
    """

    def __init__(self, code_dim: int, dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.code = _code_net(code_dim, dim)
        self.temperature = temperature

    def forward(self, own_codes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        a = nn.functional.normalize(self.code(own_codes), dim=-1)
        b = a if codes is own_codes else nn.functional.normalize(self.code(codes), dim=-1)  # Stage 1: one projection
        return a @ b.T / self.temperature


class LocalCritic(nn.Module):
    """T(M_p, z) scoring a code against every spatial position p of M's feature map.

    The image side is two 1x1 convolutions, written as linear layers over the positions: the same
    weights and initialisation, and cheaper than convolutions on a CPU.
    """

    def __init__(self, feature_channels: int, code_dim: int, dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(feature_channels, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.code = _code_net(code_dim, dim)
        self.temperature = temperature

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        positions = features.flatten(2).transpose(1, 2)  # (B, P, C)
        local, code = _cosine(self.image(positions), self.code(codes))  # (B, P, dim), (B, dim)
        return torch.einsum("ipd,jd->pij", local, code) / self.temperature  # (P, B, B): one matrix per position


def _joint_mean(scores: torch.Tensor, joint: torch.Tensor | None) -> torch.Tensor:
    """Mean of f(scores) over the joint samples of (..., B, B) matrices: the diagonal, or the
    entries of the boolean mask `joint`. Masked sums, not boolean indexing: no gather and scatter."""
    if joint is None:
        return scores.diagonal(dim1=-2, dim2=-1).mean()
    per_matrix = (scores * joint).sum((-2, -1))
    return per_matrix.sum() / (joint.sum() * per_matrix.numel())


def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """The default marginal samples (an image with the code of another item) as a mask over (B, B)."""
    b = scores.shape[-1]
    return ~torch.eye(b, dtype=torch.bool, device=scores.device)


def _marginal_log_mean_exp(scores: torch.Tensor, marginal: torch.Tensor | None = None) -> torch.Tensor:
    """log E_marginal[exp T] over the entries of the (B, B) mask `marginal` (default: off the
    diagonal) of every matrix, computed with log-sum-exp."""
    mask = _off_diagonal(scores) if marginal is None else marginal
    kept = scores.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(kept.flatten(), dim=0) - math.log(int(mask.sum()) * (scores.numel() // mask.numel()))


def dv_bound(scores: torch.Tensor, joint_mask: torch.Tensor | None = None,
             marginal_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Donsker-Varadhan: E_joint[T] - log E_marginal[exp T], in nats, computed with log-sum-exp."""
    return _joint_mean(scores, joint_mask) - _marginal_log_mean_exp(scores, marginal_mask)


class MIEstimator(nn.Module):
    """Turns a score matrix into (surrogate to maximise, MI estimate in nats).

    dv: Donsker-Varadhan with MINE's bias correction: the gradient of log E[exp T] uses a moving
        average of E[exp T] as denominator (kept in log space, as a buffer, so it is checkpointed).
    jsd: Jensen-Shannon (Deep InfoMax); its critic approximates the log density ratio, so the
        estimate reported is the DV bound of that same critic.
    infonce: contrastive bound, at most log B; rows are images, each picks its code among B
        (with several joint entries in a row, the mean over them, as in supervised contrastive losses).

    `joint_mask` (B, B) marks which (image, code) entries are joint samples; by default the
    diagonal (each image with its own code). `marginal_mask` marks the entries drawn from the
    product of the marginals (independent items); by default every entry off the diagonal.
    """

    def __init__(self, kind: Estimator = "dv", ema: float = 0.01) -> None:
        super().__init__()
        if kind not in get_args(Estimator):
            raise ValueError(f"unknown MI estimator {kind!r}")
        self.kind, self.ema = kind, ema
        self.register_buffer("log_ma", torch.tensor(float("nan")))

    def forward(self, scores: torch.Tensor, joint_mask: torch.Tensor | None = None,
                marginal_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "infonce":
            return self._infonce(scores, joint_mask)
        joint = _joint_mean(scores, joint_mask)
        lme = _marginal_log_mean_exp(scores, marginal_mask)
        estimate = (joint - lme).detach()  # the DV bound
        if self.kind == "jsd":
            off = _off_diagonal(scores) if marginal_mask is None else marginal_mask
            softplus_marginal = (nn.functional.softplus(scores) * off).sum() / (off.sum() * (scores.numel() // off.numel()))
            return -_joint_mean(nn.functional.softplus(-scores), joint_mask) - softplus_marginal, estimate
        if self.training:
            self._update(lme.detach())
        # d/dθ exp(lme - log_ma) = ∇E[exp T] / moving average: MINE's unbiased-gradient surrogate.
        surrogate = joint - torch.exp(lme - self.log_ma)
        return surrogate, estimate

    @staticmethod
    def _infonce(scores: torch.Tensor, joint_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b = scores.shape[-1]
        mask = torch.eye(b, dtype=torch.bool, device=scores.device) if joint_mask is None else joint_mask
        log_softmax = scores - torch.logsumexp(scores, dim=-1, keepdim=True)
        per_row = (log_softmax * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        bound = per_row[..., mask.any(-1)].mean() + math.log(b)
        return bound, bound.detach()

    @torch.no_grad()
    def _update(self, lme: torch.Tensor) -> None:
        if torch.isnan(self.log_ma):
            self.log_ma.copy_(lme)
        else:
            self.log_ma.copy_(torch.logaddexp(self.log_ma + math.log1p(-self.ema), lme + math.log(self.ema)))
