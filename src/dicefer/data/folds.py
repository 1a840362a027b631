"""Subject-independent k-fold splits (CK+, Oulu-CASIA): no person is in both train and test."""
from __future__ import annotations

from collections.abc import Sequence

from dicefer.data.listing import DataError, Listing


def subject_folds(name: str, sources: list[str], labels: list[int], subjects: Sequence[str],
                  classes: tuple[str, ...], fold: int, folds: int) -> dict[str, Listing]:
    """{train, test} where test holds the subjects of fold `fold` (1..folds).

    Subjects are sorted and dealt round-robin into the folds, so a fold's members depend only on
    the set of subjects, never on a seed; identity labels are the subjects' ranks.
    """
    people = sorted(set(subjects))
    if len(people) < folds:
        raise DataError(f"{name}: {len(people)} subjects cannot make {folds} subject-independent folds; lower data.folds")
    rank = {s: i for i, s in enumerate(people)}
    parts: dict[str, tuple[list[str], list[int], list[int]]] = {"train": ([], [], []), "test": ([], [], [])}
    for source, label, subject in zip(sources, labels, subjects):
        split = "test" if rank[subject] % folds == fold - 1 else "train"
        for column, value in zip(parts[split], (source, label, rank[subject])):
            column.append(value)
    return {split: Listing(f"{name} {split} (fold {fold} of {folds})", paths, y, ids, classes)
            for split, (paths, y, ids) in parts.items()}
