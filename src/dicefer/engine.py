"""The loops: one epoch of any stage, encoding a set of images, and the metrics log."""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .errors import UserError


class NonFiniteLoss(UserError):
    """Training diverged; the message names the stage, step and term (the CLI prints it on one line)."""


Step = Callable[[tuple], tuple[list[tuple[torch.Tensor, torch.optim.Optimizer]], dict[str, float]]]


def train_one_epoch(step: Step, loader: Iterable, stage: str, epoch: int, images_per_batch: Callable[[tuple], int],
                    show_progress: bool = True) -> dict[str, float]:
    """Run `step` on every batch; it returns [(loss, optimizer), ...] and floats to log.

    Each loss is back-propagated after zeroing its own optimiser's gradients (so Stage 2's
    discriminator loss overwrites what the encoder's loss left in the discriminator), then all
    optimisers step. Returns the epoch means plus images/s measured over the whole epoch.
    """
    sums: dict[str, float] = defaultdict(float)
    n_batches = n_images = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"{stage} epoch {epoch}", leave=False, disable=not show_progress, dynamic_ncols=True)
    for batch in bar:
        losses, logs = step(batch)
        for term, value in logs.items():
            if not math.isfinite(value):
                raise NonFiniteLoss(f"{stage}, epoch {epoch}, step {n_batches}: '{term}' is {value}; "
                                    "lower the learning rate or try --set mi.estimator=jsd")
        for loss, opt in losses:
            opt.zero_grad(set_to_none=True)
            loss.backward()
        for _, opt in losses:
            opt.step()
        for k, v in logs.items():
            sums[k] += v
        n_batches += 1
        n_images += images_per_batch(batch)
        bar.set_postfix({k: f"{sums[k] / n_batches:.3g}" for k in list(logs)[:5]}, refresh=False)
    elapsed = time.perf_counter() - start
    out = {k: v / max(n_batches, 1) for k, v in sums.items()}
    out.update(images_per_s=n_images / elapsed if elapsed else 0.0, time_s=elapsed)
    return out


@torch.no_grad()
def encode(model: torch.nn.Module, dataset, batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """Codes (first output of an encoder, or a classifier's logits) for every item of `dataset`."""
    model.eval()
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        y = model(x.to(device))
        out.append((y[0] if isinstance(y, tuple) else y).float().cpu())
    return torch.cat(out).numpy()


class MetricsLog:
    """One JSON line per epoch in RUN/metrics.jsonl, flushed at once so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.epoch = 0

    def write(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self.epoch += 1
        record = {"stage": stage, "epoch": epoch, "global_epoch": self.epoch, **{k: round(v, 6) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
