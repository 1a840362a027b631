"""The run folder: --overwrite removes a run's own files by name and nothing else, a folder with
anything else is not a run folder, one training process per folder (an OS lock that a killed
process does not leave behind), a refused start leaves nothing, a corrupt checkpoint falls back
to the one before it."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY

from dicefer.cli import main
from dicefer.training.checkpoint import load_latest_checkpoint, save_checkpoint
from dicefer.training.claim import LOCK, claimed, foreign_files


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("dicefer: error: ") and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def test_every_file_a_run_writes_is_a_run_file(tiny_run):
    assert foreign_files(tiny_run) == []


@pytest.mark.parametrize("intruder, content", [("report/mine.txt", "notes"), ("notes.txt", "notes"),
                                                ("config.yaml", "hello: 1\n"), ("metrics.jsonl", "not json\n"),
                                                ("model.safetensors", "not weights")])
def test_overwrite_never_removes_what_a_run_did_not_write(tiny_run, tmp_path, capsys, intruder, content):
    run = copy_of(tiny_run, tmp_path)
    (run / intruder).write_text(content)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}
    assert main(["train", "--preset", "smoke", "--out", str(run), "--overwrite", "--quiet", *TINY]) == 2
    message = error_line(capsys)
    assert "is not a dicefer run folder" in message and intruder in message
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK} == before


def test_overwrite_replaces_a_run(tiny_run, tmp_path):
    run = copy_of(tiny_run, tmp_path)
    old = (run / "metrics.jsonl").stat().st_mtime_ns
    assert main(["train", "--preset", "smoke", "--out", str(run), "--overwrite", "--quiet", *TINY, "seed=5"]) == 0
    assert (run / "metrics.jsonl").stat().st_mtime_ns != old and "seed: 5" in (run / "config.yaml").read_text()
    assert foreign_files(run) == []


def test_a_second_train_on_a_locked_folder_exits_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    with claimed(run, resume=False):
        started = time.monotonic()
        assert main(["train", "--preset", "smoke", "--out", str(run), "--quiet", *TINY]) == 2
        assert f"{run} is in use" in error_line(capsys) and time.monotonic() - started < 30
        (run / "config.yaml").write_text("method: dicefer\n")
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
        assert f"{run} is in use" in error_line(capsys)


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from dicefer.training.claim import claimed\n"
                               f"with claimed(Path({str(run)!r}), resume=False):\n print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match="is in use"), claimed(run, resume=True):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / LOCK).exists()
    with claimed(run, resume=True):  # the OS dropped the dead process's lock
        pass


@pytest.mark.parametrize("argv", [["--set", "stage1.lr=-1"], ["--set", "stage1.lr=nan"], ["--set", "stage1.epochs=nan"],
                                  ["--init", "BAD_INIT"], ["--data", "fer2013:/nowhere"]])
def test_a_refused_start_leaves_no_folder(tmp_path, capsys, argv):
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    out = tmp_path / "never"
    argv = [a.replace("BAD_INIT", str(bad)) for a in argv]
    assert main(["train", "--preset", "smoke", "--out", str(out), "--quiet", *argv]) == 2
    error_line(capsys)
    assert not out.exists()
    if argv[0] == "--init":  # the corrected command then just runs
        assert main(["train", "--preset", "smoke", "--out", str(out), "--quiet", *TINY]) == 0


def test_a_corrupt_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    for step in (1, 2):
        save_checkpoint(tmp_path / "checkpoint.safetensors", {"step": step, "w": torch.full((3,), float(step))})
    assert load_latest_checkpoint(tmp_path)["step"] == 2
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\0" * 100)  # a torn write, a bad disk block
    with caplog.at_level(logging.WARNING, logger="dicefer"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a logged line, not a Python warning with its source file and line
        record = load_latest_checkpoint(tmp_path)
    assert "resuming from checkpoint.prev.safetensors" in caplog.text
    assert record["step"] == 1 and torch.equal(record["w"], torch.ones(3))


def test_weights_are_written_readable_as_open_would(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    assert (tiny_run / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
