"""Metric functions for expression recognition and for how well E and I are disentangled.

All functions take numpy arrays and return plain python values so their output can go
straight into report.json.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mutual_info_score,
    precision_recall_fscore_support,
)
from sklearn.model_selection import (
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_val_predict,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # a scikit-learn dependency


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, confusion matrix and per-class scores over the fixed class list.

    The confusion matrix and per-class table always cover every class (rows = actual,
    columns = predicted) so reports from different datasets line up; macro-F1 averages
    only the classes that occur in `y_true` or `y_pred`, as scikit-learn does, so a class
    missing from a test set does not count as a zero.
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(classes)
        },
    }


def _discretise(codes: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width histogram bins per dimension, as disentanglement_lib does before MI."""
    binned = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=n_bins)[1]
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def mutual_information_gap(codes: np.ndarray, factors: Mapping[str, np.ndarray], n_bins: int = 20) -> dict:
    """MIG (Chen et al. 2018): how exclusively each factor is captured by a single code dimension.

    Per factor, the gap between the two code dimensions with the highest mutual information,
    normalised by the factor's entropy; 1 means one dimension alone carries the factor.
    Factors with fewer than two distinct values have no entropy and are skipped.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(f"MIG needs a 2-d code with at least 2 dimensions, got shape {codes.shape}")
    binned = _discretise(codes, n_bins)
    per_factor: dict[str, float] = {}
    for name, values in factors.items():
        values = np.asarray(values)
        if len(np.unique(values)) < 2:
            continue
        mi = np.sort([mutual_info_score(values, binned[:, j]) for j in range(binned.shape[1])])[::-1]
        per_factor[name] = float((mi[0] - mi[1]) / mutual_info_score(values, values))
    mig = float(np.mean(list(per_factor.values()))) if per_factor else None
    return {"mig": mig, "per_factor": per_factor}


def group_mutual_information_gap(groups: Mapping[str, np.ndarray], factors: Mapping[str, np.ndarray],
                                 seed: int = 0, folds: int = 5) -> dict:
    """Group MIG: MIG with each code (E, I) taken as one latent, the paper-comparable reading.

    Per factor v, I(g; v) of every group g is estimated as H(v) - the held-out cross-entropy of a
    linear probe that predicts v from g (whitened, so that any invertible linear map of the group
    reads the same; logistic regression, `folds`-fold
    stratified cross-validation), clipped to [0, H(v)]: a variational lower bound, used because
    binning a 64-d group jointly is hopeless. The factor's gap is (largest - second largest) / H(v);
    group MIG is the mean over factors. 1: one group alone carries the factor; 0: both carry it
    alike. Unlike the per-dimension MIG it does not change when a code is rotated. Needs two groups.
    """
    if len(groups) < 2:
        raise ValueError(f"group MIG needs at least two groups of latents, got {list(groups)}")
    per_factor: dict[str, dict[str, float]] = {}
    for name, values in factors.items():
        labels, values = np.unique(np.asarray(values), return_inverse=True)
        counts = np.bincount(values)
        if len(labels) < 2 or counts.min() < folds:
            continue
        entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
        mi = {}
        for group, codes in groups.items():
            probe = make_pipeline(PCA(whiten=True, random_state=seed), LogisticRegression(C=1.0, max_iter=1000))
            with threadpool_limits(1):
                proba = cross_val_predict(probe, np.asarray(codes, dtype=np.float64), values,
                                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")
            cross_entropy = float(-np.log(np.clip(proba[np.arange(len(values)), values], 1e-12, None)).mean())
            mi[group] = min(max(entropy - cross_entropy, 0.0), entropy)
        top = sorted(mi.values(), reverse=True)
        per_factor[name] = {"gap": (top[0] - top[1]) / entropy, "entropy": entropy,
                            **{f"mi_{group}": value for group, value in mi.items()}}
    mig = float(np.mean([f["gap"] for f in per_factor.values()])) if per_factor else None
    return {"mig_group": mig, "per_factor": per_factor}


def identity_probe(codes: np.ndarray, identity: np.ndarray, seed: int = 0, pca_whiten: bool = False,
                   repeats: int = 5) -> dict:
    """Linear-probe accuracy for reading identity off a code: high on I, near chance on a clean E.

    Each identity's images are split in half (stratified), so the probe is tested on unseen
    images of people it was trained on; both halves take a turn as the test half, and the whole
    is repeated `repeats` times with fresh halves. The accuracy is the mean over those 2 x repeats
    fits, since a single half split moves the reading as much as the differences the probe is used
    to judge (docs/method-notes.md). Identities
    with a single image cannot be split and are left out. "chance" is the mean share of the most
    common identity in the held-out half.

    By default each dimension is standardised before an L2-regularised logistic regression, so
    identity carried by directions of small variance next to a dominant one reads low. pca_whiten=True
    first rotates to principal components scaled to unit variance (fitted on the training half),
    so the reading no longer depends on how the code's variance is spread: every linear direction
    counts alike.
    """
    identity = np.asarray(identity)
    ids, counts = np.unique(identity, return_counts=True)
    splittable = ids[counts >= 2]
    if len(splittable) < 2:
        raise ValueError("identity probe needs at least 2 identities with 2 or more images each")
    keep = np.isin(identity, splittable)
    x, y = np.asarray(codes)[keep], identity[keep]
    accuracy, chance = [], []
    for train, test in RepeatedStratifiedKFold(n_splits=2, n_repeats=repeats, random_state=seed).split(x, y):
        scale = PCA(whiten=True, random_state=seed) if pca_whiten else StandardScaler()
        probe = make_pipeline(scale, LogisticRegression(max_iter=3000)).fit(x[train], y[train])
        accuracy.append(probe.score(x[test], y[test]))
        chance.append(np.unique(y[test], return_counts=True)[1].max() / len(test))
    return {"accuracy": float(np.mean(accuracy)), "accuracy_sd": float(np.std(accuracy, ddof=1)),
            "fits": len(accuracy), "chance": float(np.mean(chance))}


def embedding_2d(codes: np.ndarray, seed: int = 0, max_points: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """2-d t-SNE of a seeded random subset of rows, capped because t-SNE cost grows with n^2.

    Returns the (n, 2) coordinates and the sorted row indices they belong to, so callers can
    colour the points by any label; the same seed and size select the same rows for E and I.
    """
    n = len(codes)
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, len(index) / 4), random_state=seed)
    # One OpenMP thread: t-SNE's per-iteration thread barriers slow it 10-25x when another
    # process (or torch's own OpenMP pool) holds a core, and the capped size keeps it fast alone.
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = tsne.fit_transform(np.asarray(codes, dtype=np.float64)[index])
    return xy, index
