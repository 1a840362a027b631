"""The terms the stages' losses are made of: the MI term, the pair L1, the sampling masks, the
shuffle adversary. Pure functions and modules: no optimisers, no I/O, no collectives."""
from __future__ import annotations

from typing import NamedTuple, get_args

import torch
from torch import nn
from torch.nn import functional as F

from dicefer.config import Estimator, GlobalCriticKind, L1Scale, Positives, TrainConfig
from dicefer.models import build
from dicefer.models.mi import CodeCritic, GlobalCritic, LocalCritic, MIEstimator


class MIReading(NamedTuple):
    """What the MI term computed: the objective to maximise (mu * global + nu * local surrogate), each
    bound's estimate in nats, and their weighted sum, the estimate Stage 1's L1 waits for."""

    objective: torch.Tensor
    global_estimate: torch.Tensor
    local_estimate: torch.Tensor
    estimate: torch.Tensor


class MITerm(nn.Module):
    """mu * global + nu * local MI between images (feature maps) and codes, each with its own estimator state.

    global_critic="features" scores the whole feature map of M against z; "code" scores M's own
    code against z through a shared projection (see CodeCritic), which Stage 1 uses by default.
    """

    def __init__(self, feature_channels: int, code_dim: int, estimator: Estimator, mu: float, nu: float,
                 global_critic: GlobalCriticKind = "features") -> None:
        super().__init__()
        if global_critic not in get_args(GlobalCriticKind):
            raise ValueError(f"unknown global critic {global_critic!r}")
        self.global_kind = global_critic
        self.global_critic = (CodeCritic(code_dim) if global_critic == "code" else GlobalCritic(feature_channels, code_dim))
        self.local_critic = LocalCritic(feature_channels, code_dim)
        self.global_est = MIEstimator(estimator)
        self.local_est = MIEstimator(estimator)
        self.mu, self.nu = mu, nu

    @classmethod
    def from_config(cls, cfg: TrainConfig, code_dim: int, global_critic: GlobalCriticKind) -> MITerm:
        """The MI term of a stage whose codes have `code_dim` dimensions, with the run's MI settings."""
        return cls(build.feature_channels(cfg), code_dim, cfg.mi.estimator, cfg.mi.mu, cfg.mi.nu, global_critic)

    def forward(self, features: torch.Tensor, codes: torch.Tensor, joint_mask: torch.Tensor | None = None,
                marginal_mask: torch.Tensor | None = None) -> MIReading:
        image = codes if self.global_kind == "code" else features
        g, g_est = self.global_est(self.global_critic(image, codes), joint_mask, marginal_mask)
        l, l_est = self.local_est(self.local_critic(features, codes), joint_mask, marginal_mask)
        return MIReading(self.mu * g + self.nu * l, g_est, l_est, self.mu * g_est + self.nu * l_est)


def consistency_l1(codes: torch.Tensor, b: int, scale: L1Scale = "raw") -> torch.Tensor:
    """Mean |E_M - E_N| over the pairs (codes = [E_M; E_N]), raw or on batch-whitened codes (see batch_whiten)."""
    if scale not in get_args(L1Scale):
        raise ValueError(f"unknown L1 scale {scale!r}")
    if scale == "whitened":
        codes = batch_whiten(codes)
    return F.l1_loss(codes[:b], codes[b:])


def batch_whiten(codes: torch.Tensor, shrink: float = 0.01) -> torch.Tensor:
    """Codes in coordinates where the batch's covariance is about the identity (Cholesky whitening).

    Standardising each dimension leaves a direction of small variance small whenever one direction
    dominates them all, as in a demo E, whose identity sits in the small directions; after whitening,
    a pair's difference costs alike in every direction that holds more than about `shrink` of a
    dimension's variance. The covariance is shrunk toward its diagonal, since 64 codes in 64
    dimensions would make it singular; directions below that floor stay damped
    (docs/method-notes.md). Computed in fp32 even under autocast.
    """
    with torch.autocast(codes.device.type, enabled=False):
        centred = codes.float() - codes.float().mean(0)
        cov = centred.T @ centred / (len(centred) - 1)
        diagonal = torch.diagonal(cov)
        cov = (1 - shrink) * cov + torch.diag(shrink * diagonal + 1e-5 * diagonal.mean() + 1e-12)
        lower = torch.linalg.cholesky(cov)
        return torch.linalg.solve_triangular(lower, centred.T, upper=False).T


def partners(b: int, device: torch.device) -> torch.Tensor:
    """(2B, 2B) mask over [M; N] x [M; N] marking each image's sampled partner (M_i with N_i)."""
    return F.one_hot(torch.arange(2 * b, device=device).roll(b), 2 * b).bool()


def joint_mask(y: torch.Tensor, positives: Positives) -> torch.Tensor:
    """(2B, 2B) mask over [M; N] images x [M; N] codes marking the joint samples of I(M; E_N)."""
    if positives not in get_args(Positives):
        raise ValueError(f"unknown positives {positives!r}")
    if positives == "pair":
        return partners(len(y), y.device)
    labels = torch.cat([y, y])
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(2 * len(y), dtype=torch.bool, device=y.device)


def independent_mask(b: int, device: torch.device) -> torch.Tensor:
    """(2B, 2B) mask of the marginal samples of I(M; E_N): an image with the code of an image drawn
    independently of it, i.e. any other image but its sampled partner. A partner is drawn for its
    expression, so (M_i, E_N_i) is a joint sample; counted as a marginal one it would bias the DV
    bound down, by about log(1 + (e^I - 1) / (2B - 1)) nats at true MI I (tests/test_mi.py)."""
    return ~(torch.eye(2 * b, dtype=torch.bool, device=device) | partners(b, device))


def code_diagnostics(e_m: torch.Tensor, e_n: torch.Tensor) -> dict[str, float]:
    """The collapse check: spread of the codes, and L1 of true pairs against non-pairs."""
    codes = torch.cat([e_m, e_n])
    nonpair = e_n.roll(1, dims=0)
    return {
        "code_std": float(codes.std(0).mean()),
        "l1_pair": float((e_m - e_n).abs().mean()),
        "l1_nonpair": float((e_m - nonpair).abs().mean()),
    }


def shuffle_index(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random derangement-like permutation: a random non-zero cyclic shift of a random order."""
    order = torch.randperm(n, generator=generator)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(shift)
    return perm.to(device)


def adversary_log_likelihood(joint_logits: torch.Tensor, shuffled_logits: torch.Tensor) -> torch.Tensor:
    """E[log D(E, I)] + E[log(1 - D(E, I_shuffled))]."""
    return F.logsigmoid(joint_logits).mean() + F.logsigmoid(-shuffled_logits).mean()


def classification_logs(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, **terms: torch.Tensor) -> dict[str, float]:
    """What a step with a classifier logs: its loss, `terms` (other named parts of it), its accuracy."""
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()},
            "accuracy": float((logits.argmax(1) == y).float().mean())}
