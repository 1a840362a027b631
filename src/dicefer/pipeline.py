"""`dicefer train` as one library call: claim the run folder, train, then evaluate into RUN/report/."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from dicefer.config import TrainConfig
from dicefer.evaluation.evaluate import evaluate_run
from dicefer.training import distributed
from dicefer.training.claim import claimed
from dicefer.training.loop import StopRequest
from dicefer.training.train import train


def train_and_evaluate(cfg: TrainConfig, out: Path, show_progress: bool = True, resume: bool = False,
                       overwrite: bool = False) -> dict | None:
    """Train as `cfg` says into `out` and return the report (None on ranks other than 0).

    `out` must hold no run, unless `resume` (continue from its checkpoint) or `overwrite` (replace a
    run's files; see training/claim.py). The folder stays locked until the report is written.
    Under torchrun every process calls this; each trains on its shard, only rank 0 writes.
    """
    proc = distributed.init(cfg.device)
    out = Path(out)
    try:
        with claimed(out, resume, overwrite) if proc.is_main else nullcontext(), StopRequest() as stop:
            splits = train(cfg, out, proc, stop, show_progress, resume)
            return evaluate_run(out, splits=splits) if proc.is_main else None
    finally:
        distributed.close(proc)
