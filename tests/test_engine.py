"""What stays on screen after an epoch's progress bar is gone; the learning-rate schedules."""
import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from dicefer.training.distributed import Process
from dicefer.training.loop import (
    MetricsLog,
    ResumableBatches,
    StageRunner,
    epoch_summary,
)
from dicefer.training.stages import Stage, StepResult


def test_epoch_summary_names_the_stage_the_mi_terms_and_the_speed():
    means = {"loss": -1.5, "mi_global": 0.2, "mi_local": 0.25, "l1_pair": 0.3, "l1_nonpair": 0.5,
             "images_per_s": 74.4, "time_s": 40.0, "l1_active": 1.0}
    line = epoch_summary("stage1", 2, 6, means)
    assert line.startswith("stage1 epoch 3/6:")
    assert "mi_global 0.2" in line and "l1_pair 0.3" in line and "l1_nonpair 0.5" in line
    assert line.endswith("(74 images/s)") and "time_s" not in line and "l1_active" not in line


class OneWeight(Stage):
    """A stage of one weight on 4 one-number batches, recording the learning rate of every step."""

    name = "stage1"

    def __init__(self, lr: float, epochs: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.optimizers = (torch.optim.SGD([self.w], lr=lr),)
        data = TensorDataset(torch.arange(4.0))
        self.loader = DataLoader(data, batch_sampler=ResumableBatches(SequentialSampler(data), 1, False))
        self.epochs, self.seen = epochs, []

    def step(self, batch):
        self.seen.append(self.optimizers[0].param_groups[0]["lr"])
        return StepResult(((self.w * batch[0]).sum(),), {"loss": 0.0})


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_cosine_schedule_decays_over_the_stage_and_constant_leaves_the_rate(schedule, tmp_path):
    stage = OneWeight(0.1, 2)
    runner = StageRunner(Process(), MetricsLog(tmp_path / "m.jsonl"), lambda record: None, show_progress=False,
                         schedule=schedule)
    runner.run(stage)
    expected = [0.1 * (0.5 * (1 + math.cos(math.pi * t / 8)) if schedule == "cosine" else 1) for t in range(8)]
    assert stage.seen == pytest.approx(expected)


def test_cosine_schedule_continues_from_a_loaded_optimiser(tmp_path):
    """A run resumed half-way: the optimiser's saved state holds the decayed rate, and the schedule
    goes on from the rate the stage was built with, not from that one."""
    saved = []
    first = OneWeight(0.2, 2)
    StageRunner(Process(), MetricsLog(tmp_path / "a.jsonl"), lambda record: saved.append(copy.deepcopy(record)), show_progress=False, schedule="cosine",
                every_steps=2).run(first)
    halfway = next(r for r in saved if r["position"] == {"stage": "stage1", "epoch": 1, "step": 2})
    assert halfway["state"]["optimizers"][0]["param_groups"][0]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 5 / 8)))
    resumed = OneWeight(0.2, 2)
    StageRunner(Process(), MetricsLog(tmp_path / "b.jsonl"), lambda record: None, show_progress=False,
                schedule="cosine", resume={**halfway, "completed": []}).run(resumed)
    assert resumed.seen == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in (6, 7)])
    assert resumed.seen == pytest.approx(first.seen[6:])
