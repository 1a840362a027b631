"""`dicefer train`: Stage 1 (expression encoder), Stage 2 (identity encoder), Stage 3 (classifier),
or the supervised baseline; then the evaluation report. Builds every object; the loops only use them."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from .checkpoint import MODEL_FILE, save_model
from .config import TrainConfig, to_dict
from .data.pairs import SameExpressionPairs
from .data.torch_datasets import FacePairs, Faces, resize_all
from .data.transforms import Preprocess
from .datasets import load_dataset
from .engine import MetricsLog, encode, train_one_epoch
from .evaluate import evaluate_run
from .models.encoders import Encoder
from .models.heads import Classifier, ShuffleDiscriminator
from .stages import MITerm, Stage1, Stage2, supervised_step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def train(cfg: TrainConfig, out: Path, show_progress: bool = True) -> dict:
    """Train as `cfg` says into the run folder `out` (which must not hold a run) and return the report."""
    # ---------------- setup ----------------
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    log = MetricsLog(out / "metrics.jsonl")

    # ---------------- data ----------------
    train_set, _ = load_dataset(cfg)
    images = resize_all(train_set, cfg.data.size, cfg.data.grayscale)
    channels = images.shape[1]
    augment = Preprocess.for_training(cfg.data)

    def encoder() -> Encoder:
        return Encoder(cfg.model.code_dim, channels, cfg.model.init).to(device)

    def run_stage(name: str, epochs: int, step, loader, per_batch) -> None:
        for epoch in range(epochs):
            for obj in (loader.sampler, loader.dataset):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            stats = train_one_epoch(step, loader, name, epoch, per_batch, show_progress)
            log.write(name, epoch, stats)

    classifier = Classifier(cfg.model.code_dim, len(train_set.classes), cfg.model.classifier_hidden).to(device)
    if cfg.method == "supervised":
        # ---------------- supervised baseline ----------------
        enc_e = encoder()
        opt = torch.optim.Adam([*enc_e.parameters(), *classifier.parameters()], lr=cfg.supervised.lr)
        loader = DataLoader(Faces(images, train_set.expression, augment, cfg.seed), batch_size=2 * cfg.batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(cfg.seed), drop_last=True)

        def sup_step(batch):
            enc_e.train(); classifier.train()
            x, y = (t.to(device) for t in batch)
            loss, logs = supervised_step(enc_e, classifier, x, y)
            return [(loss, opt)], logs

        run_stage("supervised", cfg.supervised_epochs(), sup_step, loader, lambda b: len(b[0]))
        save_model(out / MODEL_FILE, {"expression": enc_e, "classifier": classifier}, cfg, "supervised", train_set.classes)
    else:
        pair_loader = DataLoader(FacePairs(images, train_set.expression, augment, cfg.seed), batch_size=cfg.batch_size,
                                 sampler=SameExpressionPairs(train_set.expression, cfg.seed), drop_last=True)
        per_pair_batch = lambda b: 2 * len(b[0])  # noqa: E731 - both images of every pair pass the encoder

        def mi_term(code_dim: int, global_critic: str) -> MITerm:
            return MITerm(Encoder.feature_channels, code_dim, cfg.model.critic_dim, cfg.mi.estimator, cfg.mi.ema,
                          cfg.mi.mu, cfg.mi.nu, cfg.mi.temperature, global_critic).to(device)

        # ---------------- Stage 1: expression encoder ----------------
        enc_e = encoder()
        head = torch.nn.Linear(cfg.model.code_dim, len(train_set.classes)).to(device) if cfg.stage1.ce_weight else torch.nn.Identity()
        s1 = Stage1(enc_e, mi_term(cfg.model.code_dim, cfg.stage1.global_critic), cfg.stage1.delta, cfg.stage1.positives,
                    cfg.stage1.l1_after_mi, cfg.stage1.variance_weight, head=head, ce_weight=cfg.stage1.ce_weight)
        opt1 = torch.optim.Adam([*enc_e.parameters(), *s1.mi.parameters(), *head.parameters()], lr=cfg.stage1.lr)

        def step1(batch):
            enc_e.train(); s1.mi.train()
            x_m, x_n, y = (t.to(device) for t in batch)
            loss, logs = s1.step(x_m, x_n, y)
            return [(loss, opt1)], logs

        run_stage("stage1", cfg.stage1.epochs, step1, pair_loader, per_pair_batch)
        save_model(out / MODEL_FILE, {"expression": enc_e}, cfg, "stage1", train_set.classes)

        # ---------------- Stage 2: identity encoder, expression encoder frozen ----------------
        enc_e.eval().requires_grad_(False)
        enc_i = encoder()
        s2 = Stage2(enc_e, enc_i, mi_term(2 * cfg.model.code_dim, "features"), ShuffleDiscriminator(cfg.model.code_dim).to(device),
                    cfg.stage2.zeta_adv)
        opt2 = torch.optim.Adam([*enc_i.parameters(), *s2.mi.parameters()], lr=cfg.stage2.lr)
        opt_d = torch.optim.Adam(s2.disc.parameters(), lr=cfg.stage2.disc_lr)
        shuffles = torch.Generator().manual_seed(cfg.seed + 2)

        def step2(batch):
            enc_i.train(); s2.mi.train(); s2.disc.train()
            x_m, x_n, _ = (t.to(device) for t in batch)
            loss, d_loss, logs = s2.step(x_m, x_n, shuffles)
            return [(loss, opt2), (d_loss, opt_d)], logs

        run_stage("stage2", cfg.stage2.epochs, step2, pair_loader, per_pair_batch)
        enc_i.eval()

        # ---------------- Stage 3: classifier on the frozen expression code ----------------
        codes = torch.from_numpy(encode(enc_e, Faces(images, train_set.expression, Preprocess.for_evaluation(cfg.data)), device=device))
        classifier.fit_standardisation(codes)
        opt3 = torch.optim.Adam(classifier.parameters(), lr=cfg.stage3.lr)
        code_loader = DataLoader(TensorDataset(codes, torch.as_tensor(train_set.expression)), batch_size=cfg.stage3.batch_size,
                                 shuffle=True, generator=torch.Generator().manual_seed(cfg.seed + 3))

        def step3(batch):
            classifier.train()
            z, y = (t.to(device) for t in batch)
            logits = classifier(z)
            loss = torch.nn.functional.cross_entropy(logits, y)
            return [(loss, opt3)], {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}

        run_stage("stage3", cfg.stage3.epochs, step3, code_loader, lambda b: len(b[0]))
        save_model(out / MODEL_FILE, {"expression": enc_e, "identity": enc_i, "classifier": classifier}, cfg, "stage3", train_set.classes)

    # ---------------- evaluation ----------------
    return evaluate_run(out)
