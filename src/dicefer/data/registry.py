"""A DataSpec -> (train, evaluated) FaceSets: the embedded synthetic faces, or a dataset on disk;
and the faces a run's probabilities are calibrated on (calibration_split).

Every adapter under data/ turns its layout into Listings (sources and labels); decoding is the
same for all of them and cached (data/cache.py). The evaluated split is the dataset's test split,
or its validation split (data.eval_split); each FaceSet's `split` names it.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dicefer.config import DataConfig, TrainConfig
from dicefer.data import affectnet, ckplus, fer2013, folder, oulu, rafdb
from dicefer.data.base import FaceSet
from dicefer.data.cache import decode_cached, default_cache_dir
from dicefer.data.listing import DataError, Listing
from dicefer.data.spec import ON_DISK
from dicefer.data.synthetic import SyntheticSpec, load_synthetic

# Each adapter gets the data.* settings it uses and returns its splits as Listings.
ADAPTERS: dict[str, Callable[[Path, DataConfig], dict[str, Listing]]] = {
    "rafdb": lambda root, d: rafdb.load(root, d.aligned),
    "fer2013": lambda root, d: fer2013.load(root, d.contempt),
    "ckplus": lambda root, d: ckplus.load(root, d.fold, d.folds, d.contempt, d.peak_frames),
    "affectnet": lambda root, d: affectnet.load(root, d.contempt, d.face_box),
    "oulu": lambda root, d: oulu.load(root, d.fold, d.folds, d.peak_frames),
    "folder": lambda root, d: folder.load(root, d.contempt),
}
assert tuple(ADAPTERS) == ON_DISK
log = logging.getLogger("dicefer")


def load_dataset(cfg: TrainConfig, progress: bool = True) -> tuple[FaceSet, FaceSet]:
    """(train, evaluated split); `progress` shows a bar while images are rendered or decoded the first time."""
    data, spec = cfg.data, cfg.data.spec
    if spec.name == "synthetic":
        train, test = load_synthetic(_synthetic_spec(cfg), progress=progress)
        return dataclasses.replace(train, split="train"), test
    root = spec.root()
    splits = ADAPTERS[spec.name](root, data)
    if not splits.get("train"):
        raise DataError(f"{root}: no training images found for {spec.name}")
    evaluated = _evaluation_split(splits, data.eval_split, f"{spec.name}:{root}")
    return tuple(dataclasses.replace(decode_cached(splits[s], data.size, data.grayscale, default_cache_dir(), data.strict,  # type: ignore[return-value]
                                                   progress), split=s) for s in ("train", evaluated))


def _synthetic_spec(cfg: TrainConfig) -> SyntheticSpec:
    data = cfg.data
    return SyntheticSpec(train_identities=data.train_identities, test_identities=data.test_identities,
                         images_per_identity=data.images_per_identity, size=data.size, min_intensity=data.min_intensity,
                         seed=cfg.seed if data.synthetic_seed is None else data.synthetic_seed)


def calibration_split(cfg: TrainConfig, train: FaceSet, evaluated: FaceSet,
                      progress: bool = True) -> tuple[FaceSet, FaceSet | None]:
    """(the faces to train on, the faces to fit the probabilities' temperature on, or None).

    The synthetic benchmark renders people of their own for it (as unseen as the test people,
    from a seed no run can be given); a dataset on disk gives its val split when the run is
    scored on test; otherwise data.calibration_holdout of train, drawn with the run's seed and
    left out of training; otherwise none."""
    data, spec = cfg.data, cfg.data.spec
    if spec.name == "synthetic":
        own = _synthetic_spec(cfg)
        people = dataclasses.replace(own, train_identities=1, test_identities=max(2, own.test_identities // 2),
                                     seed=own.seed + 2**32)  # config seeds stop below 2**32
        faces = load_synthetic(people, progress=progress)[1]
        return train, dataclasses.replace(faces, name="synthetic-calibration", split="calibration")
    if evaluated.split == "test":
        splits = ADAPTERS[spec.name](spec.root(), data)
        if splits.get("val"):
            val = decode_cached(splits["val"], data.size, data.grayscale, default_cache_dir(), data.strict, progress)
            return train, dataclasses.replace(val, split="val")
    if data.calibration_holdout <= 0:
        return train, None
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    held = max(1, round(data.calibration_holdout * len(train)))
    return train.subset(np.sort(order[held:])), train.subset(np.sort(order[:held]), f"{train.name} (held-out slice)")


def _evaluation_split(splits: dict[str, Listing], wanted: str, spec: str) -> str:
    present = [s for s in ("test", "val") if splits.get(s)]
    if wanted == "auto":
        if not present:
            raise DataError(f"{spec} has no test or val split to evaluate on")
        if present[0] == "val":
            log.info("%s has no test split: evaluating on val", spec)
        return present[0]
    if wanted not in present:
        raise DataError(f"{spec} has no {wanted} split (it has: {', '.join(['train', *present])}); set data.eval_split")
    return wanted
