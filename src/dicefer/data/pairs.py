"""The same-expression pair sampler: the only supervision DICE-FER uses (no identity labels)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class SameExpressionPairs(Sampler[tuple[int, int]]):
    """Each epoch, every image appears once: images of one class are shuffled and paired off.

    Pairs are (i, j) with the same expression label and i != j. A class with an odd count gives
    its last image a random partner from its class. Classes with a single image are skipped
    (they cannot form a pair of different images). Epoch e of seed s always gives the same pairs.

    Shard-aware: with `world_size` ranks, every rank draws the same epoch's pairs and keeps every
    world_size-th one from position `rank`, so ranks get distinct pairs; the list is first padded
    with its own first pairs to a multiple of world_size, so that every rank takes as many steps.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.labels = np.asarray(labels)
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.by_class = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        self.by_class = [idx for idx in self.by_class if len(idx) >= 2]
        if not self.by_class:
            raise ValueError("no expression class has two images: cannot form same-expression pairs")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pairs(self) -> np.ndarray:
        """This rank's pairs of the current epoch, in order."""
        pairs = self.all_pairs()
        padded = np.concatenate([pairs, pairs[:(-len(pairs)) % self.world_size]])
        return padded[self.rank::self.world_size]

    def all_pairs(self) -> np.ndarray:
        """Every rank's pairs of the current epoch: each image once, in a shuffled order."""
        rng = np.random.default_rng((self.seed, self.epoch))
        out = []
        for idx in self.by_class:
            order = rng.permutation(idx)
            if len(order) % 2:
                partner = rng.choice(order[:-1])
                order = np.append(order, partner)
            out.append(order.reshape(-1, 2))
        pairs = np.concatenate(out)
        return pairs[rng.permutation(len(pairs))]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(map(tuple, self.pairs().tolist()))

    def __len__(self) -> int:
        total = sum((len(idx) + 1) // 2 for idx in self.by_class)
        return (total + self.world_size - 1) // self.world_size
