"""`--data SPEC` -> (train, test) FaceSets: 'synthetic', or NAME:PATH for a dataset on disk.

Every adapter under data/ turns its layout into Listings (sources and labels); decoding is the
same for all of them and cached (data/cache.py). "test" is the split evaluated: the dataset's
test split, or its validation split (data.eval_split).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dicefer.config import DataConfig, TrainConfig
from dicefer.data import affectnet, ckplus, fer2013, folder, oulu, rafdb
from dicefer.data.base import FaceSet
from dicefer.data.cache import decode_cached, default_cache_dir
from dicefer.data.listing import DataError, Listing
from dicefer.data.synthetic import SyntheticSpec, load_synthetic
from dicefer.errors import ConfigError

Adapter = Callable[[Path, DataConfig], dict[str, Listing]]
ADAPTERS: dict[str, Adapter] = {
    "rafdb": rafdb.load, "fer2013": fer2013.load, "ckplus": ckplus.load,
    "affectnet": affectnet.load, "oulu": oulu.load, "folder": folder.load,
}
log = logging.getLogger("dicefer")


def _synthetic(arg: str, data: DataConfig, seed: int, progress: bool) -> tuple[FaceSet, FaceSet]:
    if arg:
        raise ConfigError("the synthetic dataset takes no path; set its options with data.* (for example data.train_identities=100)")
    spec = SyntheticSpec(
        train_identities=data.train_identities, test_identities=data.test_identities,
        images_per_identity=data.images_per_identity, size=data.size, confounded=data.confounded, min_intensity=data.min_intensity,
        seed=seed if data.synthetic_seed is None else data.synthetic_seed,
    )
    return load_synthetic(spec, progress=progress)


LOADERS = ("synthetic", *ADAPTERS)


def parse_spec(spec: str) -> tuple[str, str]:
    """'name:path' -> (name, path), checking the name and the path before any work starts."""
    name, _, arg = spec.partition(":")
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset spec '{spec}'; valid: synthetic, {', '.join(f'{n}:PATH' for n in ADAPTERS)}")
    if name in ADAPTERS and not arg:
        raise ConfigError(f"dataset spec '{spec}' needs a path: {name}:PATH")
    if name in ADAPTERS and not Path(arg).expanduser().exists():
        raise DataError(f"{arg} does not exist (from --data {spec})")
    return name, arg


def load_dataset(cfg: TrainConfig, progress: bool = True) -> tuple[FaceSet, FaceSet]:
    """(train, evaluated split); `progress` shows a bar while images are rendered or decoded the first time."""
    name, arg = parse_spec(cfg.data.spec)
    if name == "synthetic":
        return _synthetic(arg, cfg.data, cfg.seed, progress)
    return _load_files(name, Path(arg).expanduser(), cfg.data, progress)


def _load_files(name: str, root: Path, data: DataConfig, progress: bool) -> tuple[FaceSet, FaceSet]:
    """(train, evaluation split) of dataset `name` at `root`, decoded at data.size through the cache."""
    splits = ADAPTERS[name](root, data)
    if not splits.get("train"):
        raise DataError(f"{root}: no training images found for {name}")
    evaluated = _evaluation_split(splits, data.eval_split, f"{name}:{root}")
    cache = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    return tuple(decode_cached(splits[s], data.size, data.grayscale, cache, data.strict, progress)  # type: ignore[return-value]
                 for s in ("train", evaluated))


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
