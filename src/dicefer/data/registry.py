"""A DataSpec -> (train, evaluated) FaceSets: the embedded synthetic faces, or a dataset on disk;
and the faces a run's probabilities are calibrated on (load_training_data).

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
    return _load(cfg, progress, calibration=False)[:2]


def load_training_data(cfg: TrainConfig, progress: bool = True) -> tuple[FaceSet, FaceSet, FaceSet | None]:
    """(the faces to train on, the evaluated split, the faces to fit the probabilities' temperature
    on or None).

    The synthetic benchmark renders people of their own for calibration (as unseen as the test
    people, from a seed no run can be given); a dataset on disk gives its val split when the run is
    scored on test; otherwise data.calibration_holdout of train is left out of training
    (held_out_slice); otherwise there is none."""
    return _load(cfg, progress, calibration=True)


def held_out_slice(cfg: TrainConfig, train: FaceSet) -> tuple[FaceSet, FaceSet | None]:
    """(train less the slice, the slice): data.calibration_holdout of train drawn with the run's
    seed, or (train, None) when it is 0."""
    if cfg.data.calibration_holdout <= 0:
        return train, None
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    held = max(1, round(cfg.data.calibration_holdout * len(train)))
    return train.subset(np.sort(order[held:])), train.subset(np.sort(order[:held]), f"{train.name} (held-out slice)")


def _load(cfg: TrainConfig, progress: bool, calibration: bool) -> tuple[FaceSet, FaceSet, FaceSet | None]:
    data, spec = cfg.data, cfg.data.spec
    if spec.name == "synthetic":
        own = _synthetic_spec(cfg)
        train, test = load_synthetic(own, progress=progress)
        train = dataclasses.replace(train, split="train")
        if not calibration:
            return train, test, None
        people = dataclasses.replace(own, train_identities=1, test_identities=max(2, own.test_identities // 2),
                                     seed=own.seed + 2**32)  # config seeds stop below 2**32
        faces = load_synthetic(people, progress=progress)[1]
        return train, test, dataclasses.replace(faces, name="synthetic-calibration", split="calibration")
    root = spec.root()
    splits = ADAPTERS[spec.name](root, data)
    if not splits.get("train"):
        raise DataError(f"{root}: no training images found for {spec.name}")
    evaluated = _evaluation_split(splits, data.eval_split, f"{spec.name}:{root}")

    def decode(split: str) -> FaceSet:
        faces = decode_cached(splits[split], data.size, data.grayscale, default_cache_dir(), data.strict, progress)
        return dataclasses.replace(faces, split=split)

    train, scored = decode("train"), decode(evaluated)
    if not calibration:
        return train, scored, None
    if evaluated == "test" and splits.get("val"):
        return train, scored, decode("val")
    kept, held = held_out_slice(cfg, train)
    return kept, scored, held


def _synthetic_spec(cfg: TrainConfig) -> SyntheticSpec:
    data = cfg.data
    return SyntheticSpec(train_identities=data.train_identities, test_identities=data.test_identities,
                         images_per_identity=data.images_per_identity, size=data.size, min_intensity=data.min_intensity,
                         seed=cfg.seed if data.synthetic_seed is None else data.synthetic_seed)


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
