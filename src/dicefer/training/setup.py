"""What the stages are built from: the run's config, its process and accelerator, the training
faces, and the loaders and wrappers every stage uses alike."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from dicefer.config import TrainConfig
from dicefer.data.base import FaceSet
from dicefer.data.pairs import SameExpressionPairs
from dicefer.data.torch_datasets import FacePairs, Faces
from dicefer.data.transforms import FaceInput, Preprocess
from dicefer.models import build
from dicefer.models.heads import Classifier
from dicefer.training import distributed
from dicefer.training.accelerator import Accelerator
from dicefer.training.loop import ResumableBatches


@dataclass
class Setup:
    """The training run as the stages see it. `classifier` is built first, for both methods, so that
    every method draws its initial weights in the same order; `expression` and `identity` are set by
    the stages that build E and I and read by the stages after them."""

    cfg: TrainConfig
    proc: distributed.Process
    accel: Accelerator
    faces: FaceSet
    face: FaceInput
    images: torch.Tensor  # the training faces as uint8, resized once
    classifier: Classifier
    expression: torch.nn.Module | None = None
    identity: torch.nn.Module | None = None

    @classmethod
    def build(cls, cfg: TrainConfig, proc: distributed.Process, accel: Accelerator, faces: FaceSet,
              face: FaceInput, images: torch.Tensor) -> Setup:
        classifier = build.classifier(cfg, len(faces.classes)).to(proc.device)
        return cls(cfg, proc, accel, faces, face, images, classifier)

    @property
    def device(self) -> torch.device:
        return self.proc.device

    @property
    def classes(self) -> int:
        return len(self.faces.classes)

    @property
    def data_seed(self) -> int:
        return self.cfg.seed + self.proc.rank  # each rank draws its own augmentations

    def encoder(self) -> torch.nn.Module:
        """A new E or I, on the device, initialised as model.init says."""
        return self.accel.module(build.encoder(self.cfg, self.cfg.model.init))

    def ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        """How a stage calls a module it trains: through DDP when there are several ranks."""
        return distributed.wrap(module, self.proc)

    def trained(self, encoder: torch.nn.Module) -> torch.nn.Module:
        """How a stage calls an encoder it trains: through DDP and, when asked, torch.compile."""
        return self.accel.compiled(self.ddp(encoder))

    def loader(self, dataset: Dataset, sampler: Sampler, batch_size: int, drop_last: bool,
               generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(dataset, batch_sampler=ResumableBatches(sampler, batch_size, drop_last), generator=generator,
                          **self.accel.loader_options())

    def shuffled(self, dataset: Dataset, batch_size: int, seed: int, drop_last: bool) -> DataLoader:
        """Reshuffled every epoch; across ranks, each rank takes its shard of the same shuffle."""
        if self.proc.distributed:
            sampler = DistributedSampler(dataset, self.proc.world_size, self.proc.rank, shuffle=True, seed=seed,
                                         drop_last=drop_last)
            return self.loader(dataset, sampler, batch_size, drop_last)
        order = torch.Generator().manual_seed(seed)
        return self.loader(dataset, RandomSampler(dataset, generator=order), batch_size, drop_last, order)

    def single_faces(self) -> DataLoader:
        """Augmented training faces in batches of 2 x batch_size, as the baseline trains."""
        faces = Faces(self.images, self.faces.expression, Preprocess(self.face, self.cfg.data.augment), self.data_seed)
        return self.shuffled(faces, 2 * self.cfg.batch_size, self.cfg.seed, True)

    @functools.cached_property
    def pairs(self) -> DataLoader:
        """Same-expression pairs of augmented training faces, batch_size pairs a step; one loader for
        every stage that trains on pairs (its shuffles depend only on the seed and the epoch)."""
        cfg = self.cfg
        dataset = FacePairs(self.images, self.faces.expression, Preprocess(self.face, cfg.data.augment), self.data_seed)
        sampler = SameExpressionPairs(self.faces.expression, cfg.seed, self.proc.rank, self.proc.world_size)
        return self.loader(dataset, sampler, cfg.batch_size, True)
