"""The one place that builds the networks from a config, for training, for a run read back and for
inference alike, so that what a run saved always loads into what built it."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dicefer.config import TrainConfig
from dicefer.data.base import CLASSES
from dicefer.data.transforms import FaceInput
from dicefer.errors import RunError
from dicefer.models.backbones import BACKBONES
from dicefer.models.heads import Classifier, ShuffleDiscriminator


def face_input(cfg: TrainConfig) -> FaceInput:
    """How faces reach the run's encoders: its backbone's declaration with the run's size and channels."""
    backbone = BACKBONES[cfg.model.backbone]
    return FaceInput(cfg.data.size, round(cfg.data.size * backbone.aspect), cfg.data.grayscale, backbone.scaling)


def encoder(cfg: TrainConfig, init: str = "random") -> nn.Module:
    """E or I: the backbone with a code_dim code; `init` as model.init (training) or random (to load weights into).
    forward returns (code, feature map); the class's feature_channels gives the map's channels."""
    return BACKBONES[cfg.model.backbone].build(cfg.model.code_dim, face_input(cfg).channels, init, cfg.model.maxpool)


def feature_channels(cfg: TrainConfig) -> int:
    """Channels of the feature map the backbone gives the local MI critic."""
    return BACKBONES[cfg.model.backbone].feature_channels


def classifier(cfg: TrainConfig, num_classes: int) -> Classifier:
    """Stage 3's classifier on E, which is also the baseline's head."""
    return Classifier(cfg.model.code_dim, num_classes)


def stage1_head(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Stage 1's linear cross-entropy head on E (stage1.ce_weight); an Identity when it is off, built
    then without drawing random numbers, so that the paper's recipe initialises as it would without it."""
    return nn.Linear(cfg.model.code_dim, num_classes) if cfg.stage1.ce_weight else nn.Identity()


def discriminator(cfg: TrainConfig) -> ShuffleDiscriminator:
    return ShuffleDiscriminator(cfg.model.code_dim)


def run_modules(cfg: TrainConfig, names: Sequence[str], classes: Sequence[str] = CLASSES) -> dict[str, nn.Module]:
    """The modules a run saved (`names`), freshly built to load its weights into."""
    factory = {"expression": lambda: encoder(cfg), "identity": lambda: encoder(cfg),
               "classifier": lambda: classifier(cfg, len(classes))}
    unknown = set(names) - set(factory)
    if unknown:
        raise RunError(f"unknown modules in checkpoint: {sorted(unknown)}")
    return {name: factory[name]() for name in names}
