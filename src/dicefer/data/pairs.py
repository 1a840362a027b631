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
    """

    def __init__(self, labels: np.ndarray, seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.seed = seed
        self.epoch = 0
        self.by_class = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        self.by_class = [idx for idx in self.by_class if len(idx) >= 2]
        if not self.by_class:
            raise ValueError("no expression class has two images: cannot form same-expression pairs")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pairs(self) -> np.ndarray:
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
        return sum((len(idx) + 1) // 2 for idx in self.by_class)
