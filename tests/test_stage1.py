"""Stage 1's L1 term: raw (the paper's), or on batch-whitened codes, where scaling every code down,
the escape that shrinks the code instead of making pairs alike, no longer lowers it, and directions
of small variance count as much as the dominant one."""
import pytest
import torch
from torch.nn import functional as F

from dicefer.training.stages.objectives import batch_whiten, consistency_l1


def test_scaling_the_codes_lowers_only_the_raw_l1():
    codes = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    raw, whitened = (consistency_l1(codes, 16, s) for s in ("raw", "whitened"))
    assert consistency_l1(0.1 * codes, 16, "raw") == pytest.approx(0.1 * float(raw), rel=1e-5)
    assert consistency_l1(0.1 * codes, 16, "whitened") == pytest.approx(float(whitened), rel=1e-4)


def test_the_whitened_l1_still_rewards_alike_pairs():
    g = torch.Generator().manual_seed(1)
    shared, own = torch.randn(16, 8, generator=g), torch.randn(32, 8, generator=g)
    close = torch.cat([shared, shared]) + 0.1 * own   # pairs nearly equal
    far = torch.cat([shared, torch.randn(16, 8, generator=g)]) + 0.1 * own
    assert consistency_l1(close, 16, "whitened") < 0.3 * consistency_l1(far, 16, "whitened")


def test_whitening_sees_pair_differences_that_a_dominant_direction_hides():
    """Pairs that agree on a huge shared direction but differ in the small ones (where a demo E
    keeps identity): per-dimension standardising divides those differences by the huge spread,
    whitening does not."""
    g = torch.Generator().manual_seed(3)
    shared = 100 * torch.randn(32, 1, generator=g).repeat(2, 1)  # the same for both codes of a pair
    codes = shared * torch.ones(1, 8) + torch.randn(64, 8, generator=g)  # every dimension mostly the shared part
    per_dimension = (codes - codes.mean(0)) / (codes.std(0) + 1e-4)
    standardised = F.l1_loss(per_dimension[:32], per_dimension[32:])
    # Shrinking the covariance toward its diagonal floors every direction's variance at 1 % of a
    # dimension's, so the small directions gain up to 10x over standardising; without it, 100x.
    assert consistency_l1(codes, 32, "whitened") > 8 * standardised
    nearly_unshrunk = batch_whiten(codes, shrink=1e-4)
    assert F.l1_loss(nearly_unshrunk[:32], nearly_unshrunk[32:]) > 30 * standardised


def test_finetune_objective_adds_the_pair_l1_and_it_pulls_pair_codes_together():
    from torch import nn

    from dicefer.training.stages.finetune import finetune_objective

    torch.manual_seed(0)
    shared = torch.randn(8, 6)  # what a pair has in common; the other 6 inputs differ within it
    x_m, x_n = torch.cat([shared, torch.randn(8, 6)], 1), torch.cat([shared, torch.randn(8, 6)], 1)
    y = torch.randint(0, 7, (8,))
    start, classifier = torch.randn(12, 6), nn.Linear(6, 7)

    def tuned(delta: float) -> tuple[torch.Tensor, dict[str, float]]:
        weight = start.clone().requires_grad_()
        encoder = lambda x: (x @ weight, None)
        opt = torch.optim.SGD([weight], lr=0.05)
        for _ in range(100):
            (loss,), _ = finetune_objective(encoder, classifier, x_m, x_n, y, delta, "whitened")
            opt.zero_grad()
            loss.backward()
            opt.step()
        return finetune_objective(encoder, classifier, x_m, x_n, y, 2.0, "whitened")

    (loss,), logs = tuned(0.0)
    assert float(loss.detach()) == pytest.approx(logs["ce"] + 2.0 * logs["l1"], rel=1e-5)
    assert tuned(10.0)[1]["l1"] < 0.5 * logs["l1"]  # with the L1 term, pair codes end more alike
