"""Stage 2: the identity encoder I, with E frozen."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from dicefer.models import build
from dicefer.training import distributed
from dicefer.training.accelerator import adam
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.objectives import MITerm, adversary_log_likelihood, shuffle_index


class Stage2(Stage):
    """Maximise I(M; [E_M, I_M]) - zeta_adv * (L_adv_M + L_adv_N), E frozen.

    The discriminator learns in the same step, on detached codes, to tell (E, I) from (E, I
    shuffled within the batch); I learns to fool it. Optimisers: I's first, the discriminator's
    second, so that the discriminator's own loss, back-propagated last, replaces the gradient the
    encoder's adversarial term left in it. The shuffles' generator is the stage's extra state.
    """

    name = "stage2"
    images_per_item = 2

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        cfg = setup.cfg
        self.loader, self.epochs = setup.pairs, cfg.stage2.epochs
        self.expression = setup.expression.eval().requires_grad_(False)
        self.identity = setup.identity = setup.encoder()
        self.mi = MITerm.from_config(cfg, 2 * cfg.model.code_dim, "features").to(setup.device)
        self.disc = build.discriminator(cfg).to(setup.device)
        self.zeta_adv = cfg.stage2.zeta_adv
        self.net = SimpleNamespace(identity=setup.trained(self.identity), mi=setup.ddp(self.mi))
        self.optimizers = (adam([*self.identity.parameters(), *self.mi.parameters()], lr=cfg.stage2.lr),
                           distributed.averaged(adam(self.disc.parameters(), lr=cfg.stage2.disc_lr), setup.proc))
        self.shuffles = torch.Generator().manual_seed(cfg.seed + 2)

    def get_extra_state(self) -> torch.Tensor:
        return self.shuffles.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.shuffles.set_state(state)

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        self.identity.train(); self.mi.train(); self.disc.train()
        x = torch.cat(batch[:2])
        with torch.no_grad():
            e, _ = self.expression(x)
        i, feats = self.net.identity(x)
        mi = self.net.mi(feats, torch.cat([e, i], dim=1))
        perm = shuffle_index(len(x), self.shuffles, x.device)
        # L_adv = E[log D(E, I)] + E[log(1 - D(E, I_shuffled))], summed over the M and N halves.
        adv = 2 * adversary_log_likelihood(self.disc(e, i), self.disc(e, i[perm]))
        loss = -mi.objective + self.zeta_adv * adv
        d_loss = -adversary_log_likelihood(self.disc(e, i.detach()), self.disc(e, i.detach()[perm]))
        return StepResult((loss, d_loss), {
            "loss": float(loss.detach()), "mi_global": float(mi.global_estimate), "mi_local": float(mi.local_estimate),
            "adv": float(adv.detach()), "disc_loss": float(d_loss.detach()), "id_code_std": float(i.detach().std(0).mean()),
        })
