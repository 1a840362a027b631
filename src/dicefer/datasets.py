"""`--data SPEC` -> (train, test) FaceSets. Later dataset adapters register here."""
from __future__ import annotations

from .config import DataConfig, TrainConfig
from .errors import ConfigError
from .data.base import FaceSet
from .data.synthetic import SyntheticSpec, load_synthetic


def _synthetic(arg: str, data: DataConfig, seed: int) -> tuple[FaceSet, FaceSet]:
    if arg:
        raise ConfigError("the synthetic dataset takes no path; set its options with data.* (for example data.train_identities=100)")
    spec = SyntheticSpec(
        train_identities=data.train_identities, test_identities=data.test_identities,
        images_per_identity=data.images_per_identity, size=data.size, confounded=data.confounded, min_intensity=data.min_intensity, seed=seed,
    )
    return load_synthetic(spec)


LOADERS = {"synthetic": _synthetic}


def parse_spec(spec: str) -> tuple[str, str]:
    """'name:path' -> (name, path), checking the name before any work starts."""
    name, _, arg = spec.partition(":")
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset spec '{spec}'; valid: {', '.join(LOADERS)}")
    return name, arg


def load_dataset(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    name, arg = parse_spec(cfg.data.spec)
    return LOADERS[name](arg, cfg.data, cfg.seed)
