"""Stage 1: the expression encoder E."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.nn import functional as F

from dicefer.models import build
from dicefer.training.accelerator import adam
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.objectives import (
    MITerm,
    code_diagnostics,
    consistency_l1,
    independent_mask,
    joint_mask,
)


class Stage1(Stage):
    """Maximise I(M; E_N) (global and local), minimise delta * |E_M - E_N|.

    A joint sample of I(M; E_N) is an image with the code of a different image of the same
    expression. positives="pair" uses only the sampled partners (M with E_N, N with E_M);
    positives="batch" (default) also uses every other same-expression combination in the batch:
    more samples of the same joint distribution, hence lower variance, and what lets Stage 1
    escape the constant-code collapse from random weights. Marginal samples: an image with the
    code of any other image in the batch.

    l1_scale="whitened" measures the L1 on batch-whitened codes (not in the paper): the raw L1 can be
    lowered by shrinking every code, which the scale-free critics do not resist, and a code whose
    variance sits in one direction hides the rest from it (see batch_whiten).

    l1_after_mi: the L1 waits until the MI estimate has passed this many nats (not in the paper), so
    that it cannot win alone before the critics have found a signal; once on, it stays on (the
    `l1_active` buffer). None: on from the first step, as in the paper.

    ce_weight > 0 adds cross-entropy through an auxiliary linear `head` on the code (not in the
    paper; Stage 3 still trains its own classifier on the frozen code): labels already define the
    pairs, and using them directly keeps the code from collapsing and sharpens it from step one.
    """

    name = "stage1"
    images_per_item = 2
    saves = ("expression",)

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        cfg, s = setup.cfg, setup.cfg.stage1
        self.loader, self.epochs = setup.pairs, s.epochs
        self.expression = setup.expression = setup.encoder()
        self.mi = MITerm.from_config(cfg, cfg.model.code_dim, s.global_critic).to(setup.device)
        self.head = build.stage1_head(cfg, setup.classes).to(setup.device)
        self.delta, self.positives, self.l1_after_mi, self.l1_scale = s.delta, s.positives, s.l1_after_mi, s.l1_scale
        self.ce_weight = s.ce_weight
        self.register_buffer("l1_active", torch.tensor(s.l1_after_mi is None))
        self.net = SimpleNamespace(expression=setup.trained(self.expression), mi=setup.ddp(self.mi),
                                   head=setup.ddp(self.head) if s.ce_weight else self.head)
        self.optimizers = (adam([*self.expression.parameters(), *self.mi.parameters(), *self.head.parameters()],
                                lr=s.lr),)

    def scored(self):
        return (self.expression, self.head) if self.ce_weight else None

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        self.expression.train(); self.mi.train()
        x_m, x_n, y = batch
        b = len(x_m)
        codes, feats = self.net.expression(torch.cat([x_m, x_n]))  # one pass: BatchNorm sees both halves
        e_m, e_n = codes[:b], codes[b:]
        mi = self.net.mi(feats, codes, joint_mask(y, self.positives), independent_mask(b, y.device))
        l1 = consistency_l1(codes, b, self.l1_scale)
        estimate = float(mi.estimate)
        if self.l1_after_mi is not None and estimate > self.l1_after_mi:
            self.l1_active.fill_(True)
        loss = -mi.objective + (self.delta * l1 if self.l1_active else 0.0)
        extra = {}
        if self.ce_weight:
            ce = F.cross_entropy(self.net.head(codes), torch.cat([y, y]))
            loss = loss + self.ce_weight * ce
            extra["ce"] = float(ce.detach())
        return StepResult((loss,), {
            "loss": float(loss.detach()), "mi": estimate, "mi_global": float(mi.global_estimate),
            "mi_local": float(mi.local_estimate), **code_diagnostics(e_m.detach(), e_n.detach()),
            "l1_active": float(self.l1_active), **extra,
        })
