"""Training: Stage 1 (expression encoder), Stage 2 (identity encoder), Stage 3 (classifier), or the
supervised baseline, into a run folder. Builds every object; the loops only use them.

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
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    TensorDataset,
)

from dicefer.config import TrainConfig, to_dict
from dicefer.data.base import FaceSet
from dicefer.data.listing import DataError
from dicefer.data.pairs import SameExpressionPairs
from dicefer.data.registry import load_dataset
from dicefer.data.torch_datasets import FacePairs, Faces, resize_all
from dicefer.data.transforms import Preprocess
from dicefer.errors import RunError
from dicefer.models import build
from dicefer.models.codes import encode_faces
from dicefer.run import CHECKPOINT, EXEMPLARS, METRICS, MODEL, save_config, save_model
from dicefer.training import distributed
from dicefer.training.accelerator import Accelerator, adam
from dicefer.training.checkpoint import (
    Attributes,
    GeneratorState,
    load_latest_checkpoint,
    save_checkpoint,
)
from dicefer.training.loop import MetricsLog, ResumableBatches, StageRunner, StopRequest
from dicefer.training.monitor import EvalMonitor
from dicefer.training.stages import (
    MITerm,
    Stage1,
    Stage2,
    finetune_step,
    supervised_step,
)

logger = logging.getLogger("dicefer")
STAGE3_BATCH = 256  # codes per step of the classifier on the frozen code


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
    train_set, test_set = load_dataset(cfg, progress=show_progress and proc.is_main)
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
    device = proc.device
    log = MetricsLog(out / METRICS, enabled=proc.is_main, keep=record["log_lines"] if record else 0)
    runner = StageRunner(proc, log, lambda r: save_checkpoint(out / CHECKPOINT, {"config": to_dict(cfg), **r}),
                         every_steps=cfg.checkpoint_steps, stop=stop, resume=record, autocast=accel.autocast,
                         lr_schedule=cfg.lr_schedule,
                         show_progress=show_progress and proc.is_main)

    def ddp(module: torch.nn.Module) -> torch.nn.Module:
        """How a stage calls a module it trains: through DDP when there are several ranks."""
        return distributed.wrap(module, proc)

    def trained_encoder(module: torch.nn.Module) -> torch.nn.Module:
        return accel.compiled(ddp(module))

    def save(modules: dict[str, torch.nn.Module], stage: str) -> None:
        if proc.is_main:
            save_model(out / MODEL, modules, cfg, stage, train_set.classes, exemplars)

    # ---------------- data ----------------
    face = build.face_input(cfg)
    images = resize_all(train_set, face)
    # A few training faces as they were fed, so that predict can frame detections like them; drawn
    # with their own generator, so that training draws the same random numbers with or without them.
    exemplars = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))[:EXEMPLARS]]
    augment = Preprocess(face, cfg.data.augment)
    monitor = EvalMonitor(test_set, cfg, device) if cfg.monitor and proc.is_main else None

    def scored(encoder: torch.nn.Module, head: torch.nn.Module):
        """What a stage's epochs add to metrics.jsonl with `monitor` on: val accuracy through `head`."""
        return (lambda: monitor(encoder, head)) if monitor else None
    data_seed = cfg.seed + proc.rank  # each rank draws its own augmentations

    def loader(dataset: Dataset, sampler: Sampler, batch_size: int, drop_last: bool, generator=None) -> DataLoader:
        return DataLoader(dataset, batch_sampler=ResumableBatches(sampler, batch_size, drop_last), generator=generator,
                          **accel.loader_options())

    def shuffled(dataset: Dataset, batch_size: int, seed: int, drop_last: bool) -> DataLoader:
        """Reshuffled every epoch; across ranks, each rank takes its shard of the same shuffle."""
        if proc.distributed:
            sampler = DistributedSampler(dataset, proc.world_size, proc.rank, shuffle=True, seed=seed, drop_last=drop_last)
            return loader(dataset, sampler, batch_size, drop_last)
        order = torch.Generator().manual_seed(seed)
        return loader(dataset, RandomSampler(dataset, generator=order), batch_size, drop_last, order)

    def encoder() -> torch.nn.Module:
        return accel.module(build.encoder(cfg, cfg.model.init))

    classifier = build.classifier(cfg, len(train_set.classes)).to(device)
    if cfg.method == "supervised":
        # ---------------- supervised baseline ----------------
        enc_e = encoder()
        opt = adam([*enc_e.parameters(), *classifier.parameters()], lr=cfg.stage1.lr)
        faces = shuffled(Faces(images, train_set.expression, augment, data_seed), 2 * cfg.batch_size, cfg.seed, True)
        net_e, net_c = trained_encoder(enc_e), ddp(classifier)

        def sup_step(batch):
            enc_e.train(); classifier.train()
            x, y = accel.move(batch)
            loss, logs = supervised_step(net_e, net_c, x, y)
            return [(loss, opt)], logs

        runner.run("supervised", cfg.supervised_epochs(), sup_step, faces, lambda b: len(b[0]),
                   {"expression": enc_e, "classifier": classifier, "supervised.opt": opt}, monitor=scored(enc_e, classifier))
        save({"expression": enc_e, "classifier": classifier}, "supervised")
        return train_set, test_set

    pairs = loader(FacePairs(images, train_set.expression, augment, data_seed),
                   SameExpressionPairs(train_set.expression, cfg.seed, proc.rank, proc.world_size), cfg.batch_size, True)
    per_pair_batch = lambda b: 2 * len(b[0])  # both images of every pair pass the encoder

    def mi_term(code_dim: int, global_critic: str) -> MITerm:
        return MITerm.from_config(cfg, code_dim, global_critic).to(device)

    # ---------------- Stage 1: expression encoder ----------------
    enc_e, mi1 = encoder(), mi_term(cfg.model.code_dim, cfg.stage1.global_critic)
    head = build.stage1_head(cfg, len(train_set.classes)).to(device)
    s1 = Stage1.from_config(cfg, trained_encoder(enc_e), ddp(mi1), ddp(head) if cfg.stage1.ce_weight else head)
    opt1 = adam([*enc_e.parameters(), *mi1.parameters(), *head.parameters()], lr=cfg.stage1.lr)

    def step1(batch):
        enc_e.train(); mi1.train()
        x_m, x_n, y = accel.move(batch)
        loss, logs = s1.step(x_m, x_n, y)
        return [(loss, opt1)], logs

    runner.run("stage1", cfg.stage1.epochs, step1, pairs, per_pair_batch,
               {"expression": enc_e, "stage1.mi": mi1, "stage1.head": head, "stage1.opt": opt1, "stage1.l1": Attributes(s1, "l1_on")},
               monitor=scored(enc_e, head) if cfg.stage1.ce_weight else None)
    save({"expression": enc_e}, "stage1")

    # ---------------- Stage 2: identity encoder, expression encoder frozen ----------------
    enc_e.eval().requires_grad_(False)
    enc_i, mi2 = encoder(), mi_term(2 * cfg.model.code_dim, "features")
    disc = build.discriminator(cfg).to(device)
    s2 = Stage2(enc_e, trained_encoder(enc_i), ddp(mi2), disc, cfg.stage2.zeta_adv)
    opt2 = adam([*enc_i.parameters(), *mi2.parameters()], lr=cfg.stage2.lr)
    opt_d = distributed.averaged(adam(disc.parameters(), lr=cfg.stage2.disc_lr), proc)
    shuffles = torch.Generator().manual_seed(cfg.seed + 2)

    def step2(batch):
        enc_i.train(); mi2.train(); disc.train()
        x_m, x_n, _ = accel.move(batch)
        loss, d_loss, logs = s2.step(x_m, x_n, shuffles)
        return [(loss, opt2), (d_loss, opt_d)], logs

    runner.run("stage2", cfg.stage2.epochs, step2, pairs, per_pair_batch,
               {"expression": enc_e, "identity": enc_i, "stage2.mi": mi2, "stage2.disc": disc, "stage2.opt": opt2,
                "stage2.opt_disc": opt_d, "stage2.shuffles": GeneratorState(shuffles)})
    enc_i.eval()

    # ---------------- Stage 3: classifier on the frozen expression code ----------------
    codes = torch.from_numpy(encode_faces(enc_e, train_set, face, device))
    classifier.fit_standardisation(codes)
    opt3 = adam(classifier.parameters(), lr=cfg.stage3.lr)
    code_loader = shuffled(TensorDataset(codes, torch.as_tensor(train_set.expression)), STAGE3_BATCH,
                           cfg.seed + 3, False)
    net_c = ddp(classifier)

    def step3(batch):
        classifier.train()
        z, y = accel.move(batch)
        logits = net_c(z)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return [(loss, opt3)], {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}

    runner.run("stage3", cfg.stage3.epochs, step3, code_loader, lambda b: len(b[0]),
               {"expression": enc_e, "identity": enc_i, "classifier": classifier, "stage3.opt": opt3}, every_epoch=False,
               monitor=scored(enc_e, classifier))
    save({"expression": enc_e, "identity": enc_i, "classifier": classifier}, "stage3")
    if not cfg.stage3.finetune_epochs:
        return train_set, test_set

    # ---------------- optional: fine-tune E with the classifier (stage3.finetune_epochs; not in the paper) ----------------
    # Starts from the paper's result: the Stage 1 code and a classifier already fitted on it.
    enc_e.requires_grad_(True)
    opt_f = adam([*enc_e.parameters(), *classifier.parameters()], lr=cfg.finetune_lr)
    net_e = trained_encoder(enc_e)

    def step_f(batch):
        enc_e.train(); classifier.train()
        x_m, x_n, y = accel.move(batch)
        loss, logs = finetune_step(net_e, net_c, x_m, x_n, y, cfg.stage3.finetune_delta, cfg.stage1.l1_scale)
        return [(loss, opt_f)], logs

    runner.run("finetune", cfg.stage3.finetune_epochs, step_f, pairs, per_pair_batch,
               {"expression": enc_e, "identity": enc_i, "classifier": classifier, "finetune.opt": opt_f},
               monitor=scored(enc_e, classifier))
    save({"expression": enc_e, "identity": enc_i, "classifier": classifier}, "finetune")
    return train_set, test_set
