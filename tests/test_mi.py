"""The MI estimators recover the analytic MI of correlated Gaussians: -d/2 log(1 - rho^2)."""
import math

import pytest
import torch
from torch import nn

from dicefer.models.mi import MIEstimator, dv_bound

D, RHO, BATCH = 2, 0.8, 128
TOLERANCE = 0.12  # nats; measured errors after 1500 steps are below 0.06
TRUE_MI = -D / 2 * math.log(1 - RHO**2)  # 1.022 nats


def gaussian_pairs(n: int, generator: torch.Generator, rho: float = RHO) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, D, generator=generator)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, D, generator=generator)
    return x, y


def mlp(inp: int, out: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


class SeparableCritic(nn.Module):
    """T(x_i, y_j) = f(x_i).g(y_j) + a(x_i) + b(y_j) for all (i, j) at once: a (B, B) score matrix.

    The library's critics are dot products too; the two scalar terms let this one represent the
    Gaussian log density ratio exactly (a quadratic form), so any error is the estimator's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.f, self.g, self.a, self.b = mlp(D, 16), mlp(D, 16), mlp(D, 1), mlp(D, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f(x) @ self.g(y).T + self.a(x) + self.b(y).T


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: extra threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_estimate(kind: str, rho: float = RHO, steps: int = 1500) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    critic, estimator = SeparableCritic(), MIEstimator(kind, ema=0.01)
    opt = torch.optim.Adam(critic.parameters(), lr=2e-3)
    for _ in range(steps):
        surrogate, _ = estimator(critic(*gaussian_pairs(BATCH, gen, rho)))
        opt.zero_grad()
        (-surrogate).backward()
        opt.step()
    estimator.eval()
    with torch.no_grad():
        estimates = [estimator(critic(*gaussian_pairs(512, gen, rho)))[1] for _ in range(10)]
    return float(torch.stack(estimates).mean())


@pytest.mark.parametrize("kind", ["dv", "jsd", "infonce"])
def test_estimator_recovers_gaussian_mi(kind):
    estimate = train_estimate(kind)
    assert abs(estimate - TRUE_MI) < TOLERANCE, f"{kind}: estimated {estimate:.3f} nats, true {TRUE_MI:.3f}"


@pytest.mark.parametrize("kind", ["dv", "infonce"])
def test_independent_variables_give_near_zero_mi(kind):
    assert abs(train_estimate(kind, rho=0.0, steps=500)) < 0.1


def test_dv_bound_is_stable_for_huge_scores():
    scores = torch.full((8, 8), 1e4)
    scores.fill_diagonal_(1e4 + 1)
    assert torch.isfinite(dv_bound(scores))


def test_moving_average_is_a_buffer_and_updates_only_in_training():
    est = MIEstimator("dv")
    assert "log_ma" in est.state_dict()
    est(torch.randn(4, 4, requires_grad=True))
    first = est.log_ma.clone()
    est.eval()
    est(torch.randn(4, 4) + 5)
    assert torch.equal(est.log_ma, first)


@pytest.mark.parametrize("positives", ["batch", "pair"])
def test_stage1_dv_bound_is_unbiased_at_a_known_mi(positives):
    """Stage 1's configuration: B same-expression pairs, K expressions, codes that carry the expression
    exactly. I(M; E_N) = log K, and the optimal critic T = log p(e | m) / p(e) is log K for the same
    expression, -inf for another. The DV bound with that critic must recover log K, which it does only
    when the sampled partners are kept out of the marginal samples (they are drawn for their expression)."""
    from dicefer.training.stages.objectives import independent_mask, joint_mask

    k, b = 7, 32
    generator = torch.Generator().manual_seed(0)
    estimates, with_partners = [], []
    for _ in range(400):
        y = torch.randint(0, k, (b,), generator=generator)
        labels = torch.cat([y, y])
        same = labels[:, None] == labels[None, :]
        scores = torch.where(same, torch.tensor(math.log(k)), torch.tensor(-40.0))
        joint = joint_mask(y, positives)
        estimates.append(float(dv_bound(scores, joint, independent_mask(b, y.device))))
        with_partners.append(float(dv_bound(scores, joint)))
    assert abs(sum(estimates) / len(estimates) - math.log(k)) < 0.02
    assert sum(with_partners) / len(with_partners) < math.log(k) - 0.07  # the biased marginal: log(1 + 6/63) = 0.091 nats low
