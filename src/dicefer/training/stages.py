"""What one training step of each DICE-FER stage computes. No I/O, no optimisers, no collectives.

Each function returns (loss to minimise, dict of floats to log).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dicefer.config import TrainConfig
from dicefer.models import build
from dicefer.models.heads import Classifier, ShuffleDiscriminator
from dicefer.models.mi import CodeCritic, GlobalCritic, LocalCritic, MIEstimator


class MITerm(nn.Module):
    """mu * global + nu * local MI between images (feature maps) and codes, each with its own estimator state.

    global_critic="features" scores the whole feature map of M against z; "code" scores M's own
    code against z through a shared projection (see CodeCritic), which Stage 1 uses by default.
    """

    def __init__(self, feature_channels: int, code_dim: int, estimator: str, mu: float, nu: float,
                 global_critic: str = "features") -> None:
        super().__init__()
        self.global_kind = global_critic
        self.global_critic = (CodeCritic(code_dim) if global_critic == "code" else GlobalCritic(feature_channels, code_dim))
        self.local_critic = LocalCritic(feature_channels, code_dim)
        self.global_est = MIEstimator(estimator)
        self.local_est = MIEstimator(estimator)
        self.mu, self.nu = mu, nu

    @classmethod
    def from_config(cls, cfg: TrainConfig, code_dim: int, global_critic: str) -> MITerm:
        """The MI term of a stage whose codes have `code_dim` dimensions, with the run's MI settings."""
        return cls(build.feature_channels(cfg), code_dim, cfg.mi.estimator, cfg.mi.mu, cfg.mi.nu, global_critic)

    def forward(self, features: torch.Tensor, codes: torch.Tensor, joint_mask: torch.Tensor | None = None,
                marginal_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = codes if self.global_kind == "code" else features
        g, g_est = self.global_est(self.global_critic(image, codes), joint_mask, marginal_mask)
        l, l_est = self.local_est(self.local_critic(features, codes), joint_mask, marginal_mask)
        return self.mu * g + self.nu * l, g_est, l_est


@dataclass
class Stage1:
    """Expression encoder: maximise I(M; E_N) (global and local), minimise delta * |E_M - E_N|.

    A joint sample of I(M; E_N) is an image with the code of a different image of the same
    expression. positives="pair" uses only the sampled partners (M with E_N, N with E_M);
    positives="batch" (default) also uses every other same-expression combination in the batch:
    more samples of the same joint distribution, hence lower variance, and what lets Stage 1
    escape the constant-code collapse from random weights. Marginal samples: an image with the
    code of any other image in the batch.

    l1_scale="whitened" measures the L1 on batch-whitened codes (not in the paper): the raw L1 can be
    lowered by shrinking every code, which the scale-free critics do not resist, and a code whose
    variance sits in one direction hides the rest from it (see whiten).

    ce_weight > 0 adds cross-entropy through an auxiliary linear `head` on the code (not in the
    paper; Stage 3 still trains its own classifier on the frozen code): labels already define the
    pairs, and using them directly keeps the code from collapsing and sharpens it from step one.
    """

    encoder: nn.Module
    mi: MITerm
    delta: float
    positives: str = "batch"
    l1_after_mi: float | None = 0.0
    l1_on: bool = False
    head: nn.Module | None = None
    ce_weight: float = 0.0
    l1_scale: str = "raw"

    @classmethod
    def from_config(cls, cfg: TrainConfig, encoder: nn.Module, mi: nn.Module, head: nn.Module | None) -> Stage1:
        """Stage 1 with the run's objective; `head` is the cross-entropy head (used when ce_weight > 0)."""
        s = cfg.stage1
        return cls(encoder, mi, s.delta, s.positives, s.l1_after_mi, head=head,
                   ce_weight=s.ce_weight, l1_scale=s.l1_scale)

    def step(self, x_m: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        b = len(x_m)
        codes, feats = self.encoder(torch.cat([x_m, x_n]))  # one pass: BatchNorm sees both halves
        e_m, e_n = codes[:b], codes[b:]
        mi, mi_global, mi_local = self.mi(feats, codes, joint_mask(y, self.positives), independent_mask(b, y.device))
        l1 = consistency_l1(codes, b, self.l1_scale)
        # Optional: hold L1 back until the critics have found a signal, so it cannot win alone.
        mi_estimate = float(self.mi.mu * mi_global + self.mi.nu * mi_local)
        self.l1_on = self.l1_on or self.l1_after_mi is None or mi_estimate > self.l1_after_mi
        loss = -mi + (self.delta * l1 if self.l1_on else 0.0)
        extra = {}
        if self.ce_weight:
            ce = F.cross_entropy(self.head(codes), torch.cat([y, y]))
            loss = loss + self.ce_weight * ce
            extra["ce"] = float(ce.detach())
        return loss, {
            "loss": float(loss.detach()), "mi": mi_estimate, "mi_global": float(mi_global), "mi_local": float(mi_local),
            **code_diagnostics(e_m.detach(), e_n.detach()), "l1_active": float(self.l1_on), **extra,
        }


def consistency_l1(codes: torch.Tensor, b: int, scale: str = "raw") -> torch.Tensor:
    """Mean |E_M - E_N| over the pairs (codes = [E_M; E_N]), raw or on batch-whitened codes (see whiten)."""
    if scale == "whitened":
        codes = whiten(codes)
    return F.l1_loss(codes[:b], codes[b:])


def whiten(codes: torch.Tensor, shrink: float = 0.01) -> torch.Tensor:
    """Codes in coordinates where the batch's covariance is about the identity (Cholesky whitening).

    Standardising each dimension leaves a direction of small variance small whenever one direction
    dominates them all, as in a demo E, whose identity sits in the small directions; after whitening,
    a pair's difference costs alike
    in every direction that holds more than about `shrink` of a dimension's variance. The covariance
    is shrunk toward its diagonal, since 64 codes in 64 dimensions would make it singular; directions
    below that floor stay damped (docs/method-notes.md).
    Computed in fp32 even under autocast.
    """
    with torch.autocast(codes.device.type, enabled=False):
        centred = codes.float() - codes.float().mean(0)
        cov = centred.T @ centred / (len(centred) - 1)
        diagonal = torch.diagonal(cov)
        cov = (1 - shrink) * cov + torch.diag(shrink * diagonal + 1e-5 * diagonal.mean() + 1e-12)
        lower = torch.linalg.cholesky(cov)
        return torch.linalg.solve_triangular(lower, centred.T, upper=False).T


def joint_mask(y: torch.Tensor, positives: str) -> torch.Tensor:
    """(2B, 2B) mask over [M; N] images x [M; N] codes marking the joint samples of I(M; E_N)."""
    b = len(y)
    if positives == "pair":
        partner = torch.arange(2 * b, device=y.device).roll(b)
        return nn.functional.one_hot(partner, 2 * b).bool()
    labels = torch.cat([y, y])
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(2 * b, dtype=torch.bool, device=y.device)


def independent_mask(b: int, device: torch.device) -> torch.Tensor:
    """(2B, 2B) mask of the marginal samples of I(M; E_N): an image with the code of an image drawn
    independently of it, i.e. any other image but its sampled partner. A partner is drawn for its
    expression, so (M_i, E_N_i) is a joint sample; counted as a marginal one it would bias the DV
    bound down, by about log(1 + (e^I - 1) / (2B - 1)) nats at true MI I (tests/test_mi.py)."""
    partner = torch.arange(2 * b, device=device).roll(b)
    return ~(torch.eye(2 * b, dtype=torch.bool, device=device) | nn.functional.one_hot(partner, 2 * b).bool())


def code_diagnostics(e_m: torch.Tensor, e_n: torch.Tensor) -> dict[str, float]:
    """The collapse check: spread of the codes, and L1 of true pairs against non-pairs."""
    codes = torch.cat([e_m, e_n])
    nonpair = e_n.roll(1, dims=0)
    return {
        "code_std": float(codes.std(0).mean()),
        "l1_pair": float((e_m - e_n).abs().mean()),
        "l1_nonpair": float((e_m - nonpair).abs().mean()),
    }


@dataclass
class Stage2:
    """Identity encoder (E frozen): maximise I(M; [E_M, I_M]) - zeta_adv * (L_adv_M + L_adv_N).

    The discriminator is trained in the same step on detached codes to tell (E, I) from
    (E, I shuffled within the batch); the identity encoder is trained to fool it.
    """

    expression: nn.Module
    identity: nn.Module
    mi: MITerm
    disc: ShuffleDiscriminator
    zeta_adv: float

    def step(self, x_m: torch.Tensor, x_n: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        x = torch.cat([x_m, x_n])
        with torch.no_grad():
            e, _ = self.expression(x)
        i, feats = self.identity(x)
        mi, g_est, l_est = self.mi(feats, torch.cat([e, i], dim=1))
        perm = shuffle_index(len(x), generator, x.device)
        # L_adv = E[log D(E, I)] + E[log(1 - D(E, I_shuffled))], summed over the M and N halves.
        adv = 2 * adversary_log_likelihood(self.disc(e, i), self.disc(e, i[perm]))
        loss = -mi + self.zeta_adv * adv
        d_loss = -adversary_log_likelihood(self.disc(e, i.detach()), self.disc(e, i.detach()[perm]))
        return loss, d_loss, {
            "loss": float(loss.detach()), "mi_global": float(g_est), "mi_local": float(l_est),
            "adv": float(adv.detach()), "disc_loss": float(d_loss.detach()), "id_code_std": float(i.detach().std(0).mean()),
        }


def shuffle_index(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random derangement-like permutation: a random non-zero cyclic shift of a random order."""
    order = torch.randperm(n, generator=generator)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(shift)
    return perm.to(device)


def adversary_log_likelihood(joint_logits: torch.Tensor, shuffled_logits: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(joint_logits).mean() + F.logsigmoid(-shuffled_logits).mean()


def finetune_step(encoder: nn.Module, classifier: Classifier, x_m: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor,
                  delta: float, l1_scale: str) -> tuple[torch.Tensor, dict[str, float]]:
    """Fine-tuning E with the classifier on same-expression pairs (not in the paper): cross-entropy,
    plus delta x the Stage 1 L1 between pair codes, which holds identity out of E while the
    cross-entropy on confounded training identities would pull it back in."""
    b = len(y)
    codes = encoder(torch.cat([x_m, x_n]))[0]
    logits = classifier(codes)
    labels = torch.cat([y, y])
    ce = F.cross_entropy(logits, labels)
    l1 = consistency_l1(codes, b, l1_scale)
    loss = ce + delta * l1
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "l1": float(l1.detach()),
                  "accuracy": float((logits.argmax(1) == labels).float().mean())}


def supervised_step(encoder: nn.Module, classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The plain baseline: the same ResNet-18 and classifier trained end to end with cross-entropy."""
    logits = classifier(encoder(x)[0])
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}
