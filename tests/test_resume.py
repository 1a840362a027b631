"""Fault tolerance: a run killed with SIGKILL in Stage 1, resumed, stopped with SIGTERM in Stage 2 and
resumed again ends exactly where an uninterrupted run with the same seed ends; checkpoints are
atomic, hold every piece of training state, and a diverged run names the stage, step and term."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open

import dicefer
from dicefer.cli import main
from dicefer.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    save_checkpoint,
)
from dicefer.run import read_metrics
from dicefer.training.loop import NonFiniteLoss, train_one_epoch

# A few steps per epoch and a checkpoint every 2 steps: kills land in the middle of an epoch.
TINY = ["--preset", "smoke", "--quiet", "threads=1", "data.train_identities=6", "data.test_identities=3",
        "data.images_per_identity=12", "batch_size=8", "stage1.epochs=2", "stage2.epochs=1", "stage3.epochs=2",
        "checkpoint_steps=2"]
SRC = str(Path(dicefer.__file__).resolve().parents[1])


def dicefer_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dicefer", "train", *args], env=env, stderr=subprocess.PIPE, text=True)


def position(run: Path) -> dict | None:
    """Where the run's last checkpoint is, read from its metadata alone (None before the first)."""
    try:
        with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
            return json.loads(f.metadata()["record"])["position"]
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError):  # None yet, or being replaced
        return None


def stop_when(proc: subprocess.Popen, run: Path, reached, sig: int, timeout: float = 240) -> dict:
    """Send `sig` as soon as the run's checkpoint position satisfies `reached`; return that position."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pos = position(run)
        if pos and reached(pos):
            assert proc.poll() is None, "the run finished before it could be interrupted"
            proc.send_signal(sig)
            return pos
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint reached the wanted position; last one: {position(run)}")


def outcome(run: Path) -> tuple[dict, list[dict]]:
    """The report's results and every metrics line, without wall-clock times."""
    report = json.loads((run / "report" / "report.json").read_text())
    rows = read_metrics(run / "metrics.jsonl")
    for row in rows:
        del row["images_per_s"], row["time_s"]
    return {k: report[k] for k in ("evaluated_split", "test", "train", "disentanglement")}, rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "reference"
    assert main(["train", "--out", str(run), *TINY]) == 0
    return run


def test_killed_and_stopped_run_resumes_to_the_same_result(reference, tmp_path):
    run = tmp_path / "run"
    victim = dicefer_process("--out", str(run), *TINY)
    stop_when(victim, run, lambda p: p["stage"] == "stage1" and p["epoch"] == 1 and p["step"] > 0, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    record = load_checkpoint(run / "checkpoint.safetensors")
    assert record["position"]["stage"] == "stage1" and "data" in record["rng"][0]  # augmentation's random state
    # Stage 1's state_dict: E, MINE moving averages, the L1 switch (no head: stage1.ce_weight is 0); Adam's moments
    stage, optimizers = record["state"]["stage"], record["state"]["optimizers"]
    assert {key.split(".")[0] for key in stage} == {"expression", "mi", "l1_active"}
    assert stage["l1_active"].dtype == torch.bool
    assert torch.isfinite(stage["mi.global_est.log_ma"]) and "mi.local_est.log_ma" in stage
    assert len(optimizers) == 1 and all("exp_avg" in s for s in optimizers[0]["state"].values())

    resumed = dicefer_process("--resume", str(run), "--quiet")
    stop_when(resumed, run, lambda p: p["stage"] == "stage2", signal.SIGTERM)
    err = resumed.stderr.read()
    assert resumed.wait() == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after stage2, epoch 0, step" in err and f"dicefer train --resume {run}" in err
    assert position(run)["stage"] == "stage2" and position(run)["step"] > 0

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert outcome(run) == outcome(reference)


def test_last_checkpoint_holds_the_last_stage_and_every_random_state(reference):
    record = load_checkpoint(reference / "checkpoint.safetensors")
    assert record["position"] == {"stage": "stage3", "epoch": 2, "step": 0}
    assert record["completed"] == ["stage1", "stage2"] and record["log_lines"] == 5
    assert {key.split(".")[0] for key in record["state"]["stage"]} == {"expression", "identity", "classifier"}
    assert len(record["state"]["optimizers"]) == 1
    assert set(record["rng"][0]) == {"python", "numpy", "torch"}  # Stage 3 trains on codes: no augmentation
    assert record["loader_order"].dtype == torch.uint8  # Stage 3's shuffling generator
    with safe_open(str(reference / "checkpoint.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == CHECKPOINT_FORMAT


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"position": {"stage": "stage1"}, "w": torch.ones(3)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("dicefer.training.checkpoint.save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"position": {"stage": "stage2"}, "w": torch.zeros(3)})
    record = load_checkpoint(path)
    assert record["position"] == {"stage": "stage1"} and torch.equal(record["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_checkpoint_round_trip_keeps_types(tmp_path):
    state = {"adam": {"state": {0: {"step": 3}}, "param_groups": [{"betas": (0.9, 0.999), "lr": 1e-3}]},
             "python": (3, (1, 2), None), "flag": True, "none": None, "w": [torch.arange(3)]}
    save_checkpoint(tmp_path / "c.safetensors", state)
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(loaded.pop("w")[0], state.pop("w")[0]) and loaded == state


def test_non_finite_loss_names_stage_step_and_term():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(batch):
        loss = model.w.sum() * batch[0]
        return (loss,), {"loss": float(loss.detach()), "mi_global": float(torch.log(batch[0] - 1))}

    with pytest.raises(NonFiniteLoss, match=r"stage2, epoch 4, step 1: 'mi_global' is -inf"):
        train_one_epoch(step, [opt], [(torch.tensor(3.0),), (torch.tensor(1.0),)], "stage2", 4, lambda b: 1, False)
    assert model.w.item() == pytest.approx(0.7)  # the first step was taken, the diverged one was not


def test_monitoring_scores_every_epoch_and_leaves_training_unchanged(tmp_path):
    """`monitor` logs eval accuracy after each epoch that has a classifier; the weights, the report and
    every other logged value match an unmonitored run, and the last score is the report's accuracy."""
    ce = [*TINY, "stage1.ce_weight=1", "checkpoint_steps=0"]
    assert main(["train", "--out", str(tmp_path / "plain"), *ce]) == 0
    assert main(["train", "--out", str(tmp_path / "monitored"), *ce, "monitor=true"]) == 0
    plain, monitored = outcome(tmp_path / "plain"), outcome(tmp_path / "monitored")
    scored = [(row["stage"], row.pop("eval_accuracy"), row.pop("wall_clock")) for row in monitored[1] if "eval_accuracy" in row]
    assert monitored == plain
    assert [s for s, _, _ in scored] == ["stage1", "stage1", "stage3"]
    assert scored[-1][1] == pytest.approx(plain[0]["test"]["accuracy"], abs=1e-6)  # the log keeps 6 decimals
    assert all(0 <= acc <= 1 for _, acc, _ in scored) and scored[0][2] <= scored[1][2] <= scored[2][2]


FINETUNED = [*TINY, "stage3.epochs=400", "stage3.finetune_epochs=2", "stage3.finetune_delta=10", "stage1.l1_scale=whitened"]


def logged(run: Path, stage: str) -> bool:
    """Whether metrics.jsonl has a line of `stage` (Stage 3 checkpoints only at its end, but logs every epoch)."""
    try:
        return any(row["stage"] == stage for row in read_metrics(run / "metrics.jsonl"))
    except (OSError, ValueError):  # not there yet, or a line being written
        return False


def test_sigint_in_stage3_and_in_fine_tuning_resumes_to_the_same_result(tmp_path):
    """Ctrl-C (SIGINT: exit 130) during Stage 3's classifier, then during fine-tuning with the pair L1."""
    reference = tmp_path / "reference"
    assert main(["train", "--out", str(reference), *FINETUNED]) == 0
    run = tmp_path / "run"
    for stage in ("stage3", "finetune"):
        proc = dicefer_process(*(["--out", str(run), *FINETUNED] if stage == "stage3" else ["--resume", str(run), "--quiet"]))
        stop_when(proc, run, lambda p, stage=stage: logged(run, stage) and (p["stage"] != "finetune" or p["step"] > 0),
                  signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait() == 130, err
        assert f"stopped by SIGINT after {stage}" in err and f"dicefer train --resume {run}" in err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert outcome(run) == outcome(reference)
