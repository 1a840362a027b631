"""Stage 1's L1 term: raw (the paper's) or on batch-standardised codes, where scaling every code
down, the escape that shrinks the code instead of making pairs alike, no longer lowers it."""
import pytest
import torch

from dicefer.stages import consistency_l1


def test_scaling_the_codes_lowers_only_the_raw_l1():
    codes = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    raw, standardised = consistency_l1(codes, 16, False), consistency_l1(codes, 16, True)
    assert consistency_l1(0.1 * codes, 16, False) == pytest.approx(0.1 * float(raw), rel=1e-5)
    assert consistency_l1(0.1 * codes, 16, True) == pytest.approx(float(standardised), rel=1e-3)


def test_standardised_l1_still_rewards_alike_pairs():
    g = torch.Generator().manual_seed(1)
    shared, own = torch.randn(16, 8, generator=g), torch.randn(32, 8, generator=g)
    close = torch.cat([shared, shared]) + 0.1 * own   # pairs nearly equal
    far = torch.cat([shared, torch.randn(16, 8, generator=g)]) + 0.1 * own
    assert consistency_l1(close, 16, True) < 0.3 * consistency_l1(far, 16, True)


def test_finetune_step_adds_the_pair_l1_and_it_pulls_pair_codes_together():
    from torch import nn

    from dicefer.stages import finetune_step

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
            loss, _ = finetune_step(encoder, classifier, x_m, x_n, y, delta, True)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return finetune_step(encoder, classifier, x_m, x_n, y, 2.0, True)

    loss, logs = tuned(0.0)
    assert float(loss.detach()) == pytest.approx(logs["ce"] + 2.0 * logs["l1"], rel=1e-5)
    assert tuned(10.0)[1]["l1"] < 0.5 * logs["l1"]  # with the L1 term, pair codes end more alike
