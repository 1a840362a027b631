"""Input safety: a crafted pickle handed to every loading entry point never runs and gives a one-line
error; YAML never builds Python objects; an existing run folder is never overwritten silently."""
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from dicefer.cli import main
from dicefer.config import TrainConfig, to_dict


class Payload:
    """Unpickling this creates the file `marker`: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def malicious_files(tmp_path: Path) -> dict[str, tuple[bytes, Path]]:
    """A plain pickle and a torch.save zip, each proven to run its payload when unpickled naively."""
    files = {}
    for kind in ("pickle", "torch"):
        marker = tmp_path / f"pwned-{kind}"
        path = tmp_path / f"payload-{kind}"
        if kind == "pickle":
            path.write_bytes(pickle.dumps(Payload(marker)))
        else:
            torch.save({"state": Payload(marker)}, path)
        torch.load(path, weights_only=False) if kind == "torch" else pickle.loads(path.read_bytes())
        assert marker.exists(), "the payload must be live, or the test proves nothing"
        marker.unlink()
        files[kind] = (path.read_bytes(), marker)
    return files


def one_line_error(capsys) -> str:
    """The error line; at most one line of progress before it and no traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 2 and lines[-1].startswith("dicefer: error: ") and "Traceback" not in "".join(lines), lines
    return lines[-1]


def run_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(to_dict(TrainConfig())))
    return path


def in_run(file: str, *argv: str):
    """An entry point that reads `file` of a run folder: put the payload there, pass the folder."""
    def command(tmp_path: Path, payload: Path) -> list[str]:
        run = run_folder(tmp_path / "run")
        (run / file).write_bytes(payload.read_bytes())
        return [arg.replace("RUN", str(run)) for arg in argv]
    return command


def as_init(tmp_path: Path, payload: Path) -> list[str]:
    return ["train", "--preset", "smoke", "--init", str(payload), "--out", str(tmp_path / "out")]


# Each loading entry point: how to hand it the payload, and the error it must give.
ENTRY_POINTS = {
    "train --resume": (in_run("checkpoint.safetensors", "train", "--resume", "RUN"), "not a readable dicefer checkpoint"),
    "evaluate --run": (in_run("model.safetensors", "evaluate", "--run", "RUN"), "is not a readable safetensors file"),
    "predict --run": (in_run("model.safetensors", "predict", "--run", "RUN", "RUN/config.yaml"), "is not a readable safetensors file"),
    "train --init": (as_init, "payload-"),
}


@pytest.mark.parametrize("kind", ["pickle", "torch"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_pickles_never_run(tmp_path, capsys, entry, kind):
    command, message = ENTRY_POINTS[entry]
    _, marker = malicious_files(tmp_path)[kind]
    assert main(command(tmp_path, tmp_path / f"payload-{kind}")) == 2
    assert message in one_line_error(capsys)
    assert not marker.exists()


def test_yaml_never_builds_python_objects(tmp_path, capsys):
    marker = tmp_path / "pwned-yaml"
    evil = f"seed: !!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "evil.yaml").write_text(evil)
    assert main(["train", "--config", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "is not valid YAML" in one_line_error(capsys)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(evil)
    assert main(["train", "--resume", str(run)]) == 2
    assert "is not valid YAML" in one_line_error(capsys)
    assert not marker.exists()


def test_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    run = run_folder(tmp_path / "run")
    assert main(["train", "--preset", "smoke", "--out", str(run)]) == 2
    message = one_line_error(capsys)
    assert "already exists" in message and f"--resume {run}" in message and "--overwrite" in message
    assert main(["train", "--resume", str(run), "--set", "seed=3"]) == 2
    assert "drop --set" in one_line_error(capsys)
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "config.yaml is missing" in one_line_error(capsys)
    assert main(["train", "--resume", str(run)]) == 2
    assert "has no checkpoint to resume from" in one_line_error(capsys)


def test_overwrite_refuses_a_folder_holding_what_no_run_writes(tmp_path, capsys):
    run = run_folder(tmp_path / "run")
    for name in ("metrics.jsonl", "model.safetensors", "checkpoint.safetensors", "notes.txt"):
        (run / name).write_text("x")
    (run / "report").mkdir()
    (run / "report" / "report.md").write_text("x")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["train", "--preset", "smoke", "--out", str(run), "--overwrite"]) == 2
    message = one_line_error(capsys)
    assert "is not a dicefer run folder" in message and "metrics.jsonl" in message and "notes.txt" in message
    assert sorted(p.relative_to(run) for p in run.rglob("*") if p.name != ".lock") == before
