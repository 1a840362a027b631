"""The stages of each method, one module each, and the plan that lists them in order."""
from __future__ import annotations

from collections.abc import Callable

from dicefer.config import TrainConfig
from dicefer.training.setup import Setup
from dicefer.training.stages.base import Stage, StepResult
from dicefer.training.stages.finetune import Finetune
from dicefer.training.stages.stage1 import Stage1
from dicefer.training.stages.stage2 import Stage2
from dicefer.training.stages.stage3 import Stage3
from dicefer.training.stages.supervised import Supervised

__all__ = ["Stage", "StepResult", "plan", "Stage1", "Stage2", "Stage3", "Finetune", "Supervised"]


def plan(cfg: TrainConfig) -> list[Callable[[Setup], Stage]]:
    """The stages `cfg.method` trains, in order. Each is built when the one before it has ended,
    since it starts from what that one trained (and draws its initial weights then)."""
    if cfg.method == "supervised":
        return [Supervised]
    return [Stage1, Stage2, Stage3, *([Finetune] if cfg.stage3.finetune_epochs else [])]
