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
