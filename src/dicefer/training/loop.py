"""The loops: one epoch of any stage, the stages with checkpoints and resume, signals, metrics.jsonl."""
from __future__ import annotations

import itertools
import json
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import torch
from torch.utils.data import BatchSampler
from tqdm.auto import tqdm

from dicefer.config import Schedule
from dicefer.errors import UserError
from dicefer.training import distributed
from dicefer.training.checkpoint import capture_rng, restore_rng

if TYPE_CHECKING:
    from dicefer.training.stages.base import Stage, StepResult


class NonFiniteLoss(UserError):
    """Training diverged; the message names the stage, step and term (the CLI prints it on one line)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written after the step that was running."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after {where}; a checkpoint was saved")
        self.signum = signum


@dataclass
class EpochTotals:
    """Running sums of one epoch; checkpointed, so an epoch resumed half-way logs the same means."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    batches: int = 0
    images: int = 0
    seconds: float = 0.0

    def means(self, proc: distributed.Process) -> dict[str, float]:
        """Epoch means over every rank's batches, and images/s of all ranks together."""
        keys = list(self.sums)  # the same order on every rank: each logs the same terms in the same order
        *sums, batches, images = distributed.all_sum([self.sums[k] for k in keys] + [self.batches, self.images], proc)
        seconds = distributed.all_max(self.seconds, proc)
        out = {k: v / max(batches, 1) for k, v in zip(keys, sums)}
        out.update(images_per_s=images / seconds if seconds else 0.0, time_s=seconds)
        return out


def train_one_epoch(step: Callable[[tuple], StepResult], optimizers: Sequence[torch.optim.Optimizer], batches: Iterable,
                    stage: str, epoch: int, images_per_batch: Callable[[tuple], int], show_progress: bool = True, *,
                    totals: EpochTotals | None = None, autocast: Callable[[], AbstractContextManager] = nullcontext,
                    move: Callable[[tuple], tuple] = tuple, after_step: Callable[[EpochTotals], None] | None = None,
                    length: int | None = None, before_step: Callable[[EpochTotals], None] | None = None) -> EpochTotals:
    """Run `step` on every batch (moved to the device by `move`): it returns one loss per optimiser and floats to log.

    Each loss is back-propagated, in the optimisers' order, after zeroing its own optimiser's
    gradients (so Stage 2's discriminator loss overwrites what the encoder's loss left in the
    discriminator), then all optimisers step. `totals` continues an epoch resumed half-way;
    `before_step` sees the totals before every step (learning-rate schedules), `after_step` after it
    (checkpoints, stop requests). A non-finite term stops before any update.
    """
    totals = totals or EpochTotals()
    bar = tqdm(batches, desc=f"{stage} epoch {epoch}", leave=False, disable=not show_progress, dynamic_ncols=True,
               total=length, initial=totals.batches)
    last = time.perf_counter()
    for batch in bar:
        if before_step:
            before_step(totals)
        with autocast():
            losses, logs = step(move(batch))
        if len(losses) != len(optimizers):
            raise ValueError(f"{stage}: a step returned {len(losses)} losses for {len(optimizers)} optimisers")
        bad = [f"'{term}' is {value}" for term, value in logs.items() if not math.isfinite(value)]
        if bad:
            raise NonFiniteLoss(f"{stage}, epoch {epoch}, step {totals.batches}: {', '.join(bad)}; nothing was updated "
                                "and the last checkpoint is intact; lower the learning rate or try --set mi.estimator=jsd")
        for loss, opt in zip(losses, optimizers):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        for opt in optimizers:
            opt.step()
        for k, v in logs.items():
            totals.sums[k] += v
        totals.batches += 1
        totals.images += images_per_batch(batch)
        now = time.perf_counter()
        totals.seconds, last = totals.seconds + now - last, now
        bar.set_postfix({k: f"{totals.sums[k] / totals.batches:.3g}" for k in list(logs)[:5]}, refresh=False)
        if after_step:
            after_step(totals)
            last = time.perf_counter()  # checkpoint writing is not training time
    return totals


class ResumableBatches(BatchSampler):
    """A BatchSampler whose next epoch can start after its first `skip` batches, without loading them."""

    skip = 0

    def __iter__(self) -> Iterator[list]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class StopRequest:
    """SIGINT / SIGTERM ask training to stop after the current step (a second one stops at once)."""

    def __init__(self) -> None:
        self.signum = 0

    def __enter__(self) -> Self:
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum


class StageRunner:
    """Runs each stage's epochs: checkpoints after every epoch (and every `every_steps` steps), stops
    cleanly on a StopRequest, sets the learning rates from the step (`schedule`), and continues a run
    from a checkpoint record in whichever stage it was.

    A checkpoint is taken inside a stage; it holds the stage's state_dict and its optimisers' (all
    it needs to continue), the position (stage, epoch, step), the epoch's running sums, the loader's
    shuffling state at the start of the epoch, and every rank's random states.
    """

    def __init__(self, proc: distributed.Process, log: MetricsLog, save: Callable[[dict], None], *,
                 every_steps: int = 0, stop: StopRequest | None = None, resume: dict | None = None,
                 autocast: Callable[[], AbstractContextManager] = nullcontext, move: Callable[[tuple], tuple] = tuple,
                 show_progress: bool = True, schedule: Schedule = "constant") -> None:
        self.proc, self.log, self.save = proc, log, save
        self.schedule = schedule
        self.every_steps, self.stop, self.resume = every_steps, stop or StopRequest(), resume
        self.autocast, self.move, self.show_progress = autocast, move, show_progress
        self.completed: list[str] = list(resume["completed"]) if resume else []

    def run(self, stage: Stage, monitor: Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]] | None = None
            ) -> None:
        """Train `stage` for its epochs. `monitor` adds its values for the stage's scored (encoder, head)
        to the epoch's line of metrics.jsonl (when the epoch is checkpointed)."""
        if stage.name in self.completed:  # ended before the checkpoint being resumed: take the networks it passes on
            stage.load_shared(self.resume["state"]["stage"])
            return
        loader, epochs, optimizers = stage.loader, stage.epochs, stage.optimizers
        base_lrs = [[group["lr"] for group in opt.param_groups] for opt in optimizers]
        first, start, totals = 0, 0, None
        if self.resume is not None:
            first, start, totals = self._restore(stage)
        scored = stage.scored() if monitor else None
        for epoch in range(first, epochs):
            for obj in (loader.batch_sampler.sampler, loader.dataset):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            order = loader.generator.get_state() if loader.generator is not None else None
            loader.batch_sampler.skip = start
            batches = iter(loader)
            if start:  # resumed half-way: random states as they were after step `start`
                restore_rng(self._resumed_rng, loader.dataset)

            def after_step(totals: EpochTotals, epoch: int = epoch, order: torch.Tensor | None = order) -> None:
                signum = int(distributed.all_max(self.stop.signum, self.proc))
                due = self.every_steps and totals.batches % self.every_steps == 0 and totals.batches < len(loader)
                if signum or due:
                    self._checkpoint(stage, epoch, totals, order)
                if signum:
                    raise Interrupted(signum, f"{stage.name}, epoch {epoch}, step {totals.batches}")

            def before_step(totals: EpochTotals, epoch: int = epoch) -> None:
                done, total = epoch * len(loader) + totals.batches, epochs * len(loader)
                for opt, bases in zip(optimizers, base_lrs):
                    for group, base in zip(opt.param_groups, bases):
                        group["lr"] = scheduled_lr(base, done, total, self.schedule)

            totals = train_one_epoch(stage.step, optimizers, batches, stage.name, epoch, stage.images, self.show_progress,
                                     totals=totals, autocast=self.autocast, move=self.move, after_step=after_step,
                                     length=len(loader), before_step=before_step)
            means = totals.means(self.proc)
            checkpointed = stage.every_epoch or epoch + 1 == epochs
            if scored and checkpointed:
                means.update(monitor(*scored))
            self.log.write(stage.name, epoch, means)
            if self.show_progress and checkpointed:
                tqdm.write(epoch_summary(stage.name, epoch, epochs, means))
            if checkpointed:
                self._checkpoint(stage, epoch + 1, None, loader.generator.get_state() if loader.generator is not None else None)
            start, totals = 0, None
        self.completed.append(stage.name)

    def _checkpoint(self, stage: Stage, epoch: int, totals: EpochTotals | None, order: torch.Tensor | None) -> None:
        rng = distributed.gather(capture_rng(stage.loader.dataset), self.proc)
        if not self.proc.is_main:
            return
        self.save({
            "position": {"stage": stage.name, "epoch": epoch, "step": totals.batches if totals else 0},
            "completed": self.completed, "world_size": self.proc.world_size, "log_lines": self.log.lines,
            "totals": totals and {**vars(totals), "sums": dict(totals.sums)}, "loader_order": order,
            "state": {"stage": stage.state_dict(), "optimizers": [opt.state_dict() for opt in stage.optimizers]},
            "rng": rng,
        })

    def _restore(self, stage: Stage) -> tuple[int, int, EpochTotals | None]:
        """Load the checkpoint of this stage; returns (epoch, step, running sums) to continue from."""
        record, self.resume = self.resume, None
        position, state = record["position"], record["state"]
        stage.load_state_dict(state["stage"])
        for opt, saved in zip(stage.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(saved)
        if record["loader_order"] is not None:
            stage.loader.generator.set_state(record["loader_order"])
        self._resumed_rng = record["rng"][self.proc.rank]
        if not position["step"]:  # at an epoch boundary: as before that epoch's loader started
            restore_rng(self._resumed_rng)
            return position["epoch"], 0, None
        t = record["totals"]
        totals = EpochTotals(defaultdict(float, t["sums"]), t["batches"], t["images"], t["seconds"])
        return position["epoch"], position["step"], totals


def scheduled_lr(base: float, step: int, total: int, schedule: Schedule) -> float:
    """The learning rate at step `step` of a stage's `total`, from the rate it was built with
    (nanoGPT's get_lr, DINO's schedules): constant, or cosine from `base` down to 0."""
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / total))
    return base


def epoch_summary(stage: str, epoch: int, epochs: int, means: dict[str, float]) -> str:
    """One line that stays on screen when an epoch's bar is gone: its losses, MI and speed."""
    shown = [k for k in ("loss", "accuracy", "mi_global", "mi_local", "code_std", "l1_pair", "l1_nonpair", "adv")
             if k in means]
    values = "  ".join(f"{k} {means[k]:.3g}" for k in shown)
    return f"{stage} epoch {epoch + 1}/{epochs}: {values}  ({means['images_per_s']:.0f} images/s)"


class MetricsLog:
    """One JSON line per epoch in RUN/metrics.jsonl, flushed at once so a crash loses nothing.

    Only rank 0 writes (`enabled`). `keep` lines of an existing log are kept (those a resumed
    checkpoint had seen), the rest dropped, so a resumed run logs each epoch exactly once.
    """

    def __init__(self, path: Path, enabled: bool = True, keep: int = 0) -> None:
        self.path, self.enabled, self.lines = path, enabled, keep
        if enabled:
            kept = path.read_text().splitlines(keepends=True)[:keep] if keep else []
            path.write_text("".join(kept))

    def write(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self.lines += 1
        if not self.enabled:
            return
        record = {"stage": stage, "epoch": epoch, "global_epoch": self.lines, **{k: round(v, 6) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
