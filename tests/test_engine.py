"""What stays on screen after an epoch's progress bar is gone; the cosine learning-rate schedule."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from dicefer.training.distributed import Process
from dicefer.training.loop import (
    MetricsLog,
    ResumableBatches,
    StageRunner,
    cosine_lr,
    epoch_summary,
)


def test_epoch_summary_names_the_stage_the_mi_terms_and_the_speed():
    means = {"loss": -1.5, "mi_global": 0.2, "mi_local": 0.25, "l1_pair": 0.3, "l1_nonpair": 0.5,
             "images_per_s": 74.4, "time_s": 40.0, "l1_active": 1.0}
    line = epoch_summary("stage1", 2, 6, means)
    assert line.startswith("stage1 epoch 3/6:")
    assert "mi_global 0.2" in line and "l1_pair 0.3" in line and "l1_nonpair 0.5" in line
    assert line.endswith("(74 images/s)") and "time_s" not in line and "l1_active" not in line


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_cosine_schedule_decays_over_the_stage_and_constant_leaves_the_rate(schedule, tmp_path):
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    seen = []

    def step(batch):
        seen.append(opt.param_groups[0]["lr"])
        return [((w * batch[0]).sum(), opt)], {"loss": 0.0}

    data = TensorDataset(torch.arange(4.0))
    loader = DataLoader(data, batch_sampler=ResumableBatches(SequentialSampler(data), 1, False))
    runner = StageRunner(Process(), MetricsLog(tmp_path / "m.jsonl"), lambda record: None, show_progress=False,
                         lr_schedule=schedule)
    runner.run("stage1", 2, step, loader, lambda b: 1, {"stage1.opt": opt})
    expected = [0.1 * (0.5 * (1 + math.cos(math.pi * t / 8)) if schedule == "cosine" else 1) for t in range(8)]
    assert seen == pytest.approx(expected)


def test_cosine_schedule_continues_from_a_loaded_optimiser():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w], lr=0.2)
    cosine_lr([opt], 4, 8)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    resumed = torch.optim.Adam([w], lr=0.2)
    resumed.load_state_dict(opt.state_dict())
    cosine_lr([resumed], 6, 8)  # from the saved initial rate, not the halved one
    assert resumed.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 6 / 8)))
