"""Training into a run folder: the stages of the method's plan (training/stages/), one after the
other, each saved as it ends. Builds every object; the loop only uses them.

Under torchrun every process runs this function: each trains on its shard of the data with
DistributedDataParallel (see distributed.py for what every rank computes), and only rank 0 writes
the run folder.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from dicefer.config import TrainConfig, to_dict
from dicefer.data.base import FaceSet
from dicefer.data.listing import DataError
from dicefer.data.registry import load_training_data
from dicefer.data.torch_datasets import resize_all
from dicefer.errors import RunError
from dicefer.models import build
from dicefer.run import CHECKPOINT, EXEMPLARS, METRICS, MODEL, save_config, save_model
from dicefer.training import distributed
from dicefer.training.accelerator import Accelerator
from dicefer.training.checkpoint import load_latest_checkpoint, save_checkpoint
from dicefer.training.loop import MetricsLog, StageRunner, StopRequest
from dicefer.training.monitor import EvalMonitor
from dicefer.training.setup import Setup
from dicefer.training.stages import plan
from dicefer.training.temperature import calibrate

logger = logging.getLogger("dicefer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, out: Path, proc: distributed.Process, stop: StopRequest, show_progress: bool = True,
          resume: bool = False) -> tuple[FaceSet, FaceSet]:
    """Train as `cfg` says into the run folder `out` (claimed by the caller on rank 0) and return the
    (train, evaluation) splits it loaded.

    `resume`: continue from out/checkpoint.safetensors in whichever stage it was written. Every
    process of a torchrun launch runs this; only rank 0 writes. SIGINT or SIGTERM (`stop`) save a
    checkpoint and raise Interrupted.
    """
    # ---------------- setup, resume ----------------
    # Whatever can fail on bad input (the checkpoint, the dataset) fails before any work or any write.
    record = load_latest_checkpoint(out) if resume else None
    if record and record["world_size"] != proc.world_size:
        raise RunError(f"{out} was checkpointed by {record['world_size']} process(es), not {proc.world_size}: "
                       f"resume it with torchrun --nproc_per_node (x nodes) = {record['world_size']}")
    train_set, test_set, calibration_set = load_training_data(cfg, progress=show_progress and proc.is_main)
    if test_set.identity is not None:  # the report's identity probes, checked before any training
        ids, counts = np.unique(test_set.identity, return_counts=True)
        if (counts >= 2).sum() < 2:
            raise DataError(f"{test_set.name}: the identity probes need at least 2 people with 2 or more images each "
                            f"in the evaluated split; it has {len(ids)} people ({(counts >= 2).sum()} with 2 or more)")
    if proc.is_main and not resume:
        save_config(out, cfg)
        if cfg.method == "dicefer" and cfg.stage1.epochs == 0:
            logger.warning("stage1.epochs=0: Stage 2 and the classifier use the expression encoder as model.init=%s "
                           "left it, without Stage 1", cfg.model.init)
    if proc.is_main and resume:  # a checkpoint half-written when the run was killed
        for partial in out.glob(f".{CHECKPOINT}.*"):
            partial.unlink()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    accel = Accelerator(proc.device, cfg.compile, cfg.precision)
    log = MetricsLog(out / METRICS, enabled=proc.is_main, keep=record["log_lines"] if record else 0)
    runner = StageRunner(proc, log, lambda r: save_checkpoint(out / CHECKPOINT, {"config": to_dict(cfg), **r}),
                         every_steps=cfg.checkpoint_steps, stop=stop, resume=record, autocast=accel.autocast,
                         move=accel.move, schedule=cfg.lr_schedule, show_progress=show_progress and proc.is_main)

    # ---------------- data ----------------
    face = build.face_input(cfg)
    images = resize_all(train_set, face)
    # A few training faces as they were fed, so that predict can frame detections like them; drawn
    # with their own generator, so that training draws the same random numbers with or without them.
    exemplars = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))[:EXEMPLARS]]
    monitor = EvalMonitor(test_set, cfg, proc.device) if cfg.monitor and proc.is_main else None

    # ---------------- the method's stages, in order ----------------
    setup = Setup.build(cfg, proc, accel, train_set, face, images)
    for build_stage in plan(cfg):
        stage = build_stage(setup)
        runner.run(stage, monitor)
        if stage.saves and proc.is_main:
            save_model(out / MODEL, stage.saved(), cfg, stage.name, train_set.classes, exemplars)

    # ---------------- calibration: the probabilities' temperature, on faces never trained on ----------------
    saved = stage.saved()
    if calibration_set is not None and proc.is_main and "classifier" in saved:
        calibration = calibrate(saved["expression"], saved["classifier"], calibration_set, face)
        save_model(out / MODEL, saved, cfg, stage.name, train_set.classes, exemplars, calibration)
    return train_set, test_set
