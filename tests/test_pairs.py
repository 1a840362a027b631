import numpy as np
import pytest
import torch

from dicefer.data.pairs import SameExpressionPairs
from dicefer.training.stages.objectives import joint_mask, shuffle_index


def labels(seed: int = 0, n: int = 301) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 7, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_share_the_label_and_are_different_images(seed):
    y = labels(seed)
    pairs = SameExpressionPairs(y, seed).pairs()
    assert len(pairs) == len(SameExpressionPairs(y, seed))
    assert np.all(y[pairs[:, 0]] == y[pairs[:, 1]])
    assert np.all(pairs[:, 0] != pairs[:, 1])


def test_every_image_appears_in_an_epoch_and_epochs_differ():
    y = labels()
    sampler = SameExpressionPairs(y, seed=3)
    first = sampler.pairs()
    assert set(first.ravel()) == set(range(len(y)))
    sampler.set_epoch(1)
    assert not np.array_equal(first, sampler.pairs())
    sampler.set_epoch(0)
    assert np.array_equal(first, sampler.pairs())


def test_a_class_with_one_image_cannot_pair_and_is_skipped():
    y = np.array([0, 0, 1, 2, 2, 2])
    pairs = SameExpressionPairs(y).pairs()
    assert 2 not in pairs
    with pytest.raises(ValueError, match="two images"):
        SameExpressionPairs(np.array([0, 1, 2]))


def test_joint_mask_marks_partners_or_same_expression():
    y = torch.tensor([0, 1, 0])
    pair = joint_mask(y, "pair")
    assert pair[0, 3] and pair[3, 0] and pair.sum() == 6  # M_i with E_{N_i} and N_i with E_{M_i}
    batch = joint_mask(y, "batch")
    assert not batch.diagonal().any()
    assert batch[0, 2] and batch[0, 5] and not batch[0, 1]


def test_shuffle_moves_every_item():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 64):
        perm = shuffle_index(n, gen, torch.device("cpu"))
        assert sorted(perm.tolist()) == list(range(n))
        assert not (perm == torch.arange(n)).any()
