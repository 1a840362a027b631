"""The run-folder format: the files a finished run holds, how they are written, how a run is read back.

Weights are safetensors with the config, class names and stage in their metadata; the config is
also RUN/config.yaml for people and for --resume. Nothing here unpickles: a run is safetensors +
JSON + YAML, so loading a run folder from someone else can never execute code.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dicefer.config import TrainConfig, from_dict, to_dict
from dicefer.data.base import CLASSES
from dicefer.errors import RunError
from dicefer.paths import atomic_write, shown, shown_path
from dicefer.models.build import face_input, run_modules

CONFIG, METRICS, MODEL, CHECKPOINT, PREVIOUS = ("config.yaml", "metrics.jsonl", "model.safetensors",
                                                "checkpoint.safetensors", "checkpoint.prev.safetensors")
REPORT = "report"
REPORT_FILES = ("report.json", "report.md", "confusion_*.png", "embedding.png", "training_curves.png", "reliability.png")
REPORT_TITLE = "# DICE-FER evaluation:"  # report.md's first line
FIGURE_MARK = ("Software", "dicefer report")  # a PNG text chunk in every figure of a report
CONFIG_MARK = "# dicefer train: the resolved config of this run (dicefer train --resume reads it)"
PARTIAL = (".model.safetensors.*", ".checkpoint.safetensors.*")  # atomic_write's temporary files
EXEMPLARS, EXEMPLARS_KEY = 64, "framing.exemplars"  # uint8 (N, C, S, S) training faces, for inference/framing.py


def written_by_a_run(path: Path) -> bool:
    """Whether `path` (one of a run's file names, its report's included) holds what a run writes
    there, not a user's file: decided by content, each file type by its own mark."""
    try:
        if path.suffix == ".png":
            with Image.open(path) as image:
                return image.format == "PNG" and image.text.get(FIGURE_MARK[0]) == FIGURE_MARK[1]
        if path.name == "report.md":
            return path.read_text().startswith(REPORT_TITLE)
        if path.name == "report.json":
            report = json.loads(path.read_text())
            return isinstance(report, dict) and {"dataset", "method", "classes", "disentanglement"} <= set(report)
        if path.name == CONFIG:
            text = path.read_text()
            cfg = yaml.safe_load(text)
            # runs written before the mark hold every section of the config and nothing else
            full = {f.name for f in dataclasses.fields(TrainConfig)}
            return isinstance(cfg, dict) and (text.startswith(CONFIG_MARK) or set(cfg) == full - {"identity_reference"}
                                              or set(cfg) == full)
        if path.name == METRICS:
            return isinstance(read_metrics(path), list)
        with safe_open(str(path), framework="pt") as f:  # the weights and checkpoints: dicefer's metadata
            meta = f.metadata() or {}
        return "config" in meta or meta.get("format", "").startswith("dicefer-checkpoint")
    except (OSError, ValueError, RunError, yaml.YAMLError, SafetensorError, UnidentifiedImageError):
        return False


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, one per line. A last line cut short while it was written (a
    crash) is left out; any other line that is not one of its records is a RunError naming it."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
            if number == len(lines) and line.startswith('{"stage": '):
                break
        if not isinstance(record, dict) or "stage" not in record:
            raise RunError(f"{shown_path(path)}, line {number}: not a record of dicefer's training log")
        records.append(record)
    return records


def save_model(path: Path, modules: dict[str, nn.Module], cfg: TrainConfig, stage: str,
               classes: Sequence[str] = CLASSES, exemplars: torch.Tensor | None = None,
               calibration: dict | None = None) -> None:
    """`calibration`: the probabilities' temperature and what it was fitted on (evaluation/calibration.py)."""
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    if exemplars is not None:
        tensors[EXEMPLARS_KEY] = exemplars.contiguous()
    meta = {"config": json.dumps(to_dict(cfg)), "classes": json.dumps(list(classes)), "stage": stage,
            "modules": json.dumps(sorted(modules)), "input": json.dumps(dataclasses.asdict(face_input(cfg)))}
    if calibration is not None:
        meta["calibration"] = json.dumps(calibration)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    """RUN/config.yaml: the resolved config, for people to read and for --resume."""
    (Path(run_dir) / CONFIG).write_text(f"{CONFIG_MARK}\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))


class LoadedRun:
    """A trained run rebuilt from its folder alone: config, class names and modules in eval mode."""

    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        path = run_dir / MODEL
        if not run_dir.is_dir():
            raise RunError(f"run folder {run_dir} does not exist")
        if not path.is_file():
            raise RunError(f"{path} is missing: {run_dir} is not a finished dicefer run (train one with `dicefer train --out {run_dir}`)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise RunError(f"{path} is not a readable safetensors file ({err})") from None
        if "config" not in meta:
            raise RunError(f"{path} has no dicefer metadata (config): it was not written by dicefer")
        self.dir = run_dir
        self.config = from_dict(json.loads(meta["config"]))
        trained_on, fed = json.loads(meta.get("input", "null")), dataclasses.asdict(face_input(self.config))
        if trained_on is not None and trained_on != fed:  # runs written before the input was recorded have none
            raise RunError(f"{path} was trained on faces given as {trained_on}, but this version of dicefer would feed "
                           f"it {fed}: use the dicefer version that trained it")
        self.classes = tuple(json.loads(meta["classes"]))
        self.stage = meta.get("stage", "")
        self.calibration = _calibration(meta.get("calibration"), path)  # None: trained without calibration faces
        exemplars = tensors.get(EXEMPLARS_KEY)  # runs written before exemplars were kept have none
        self.exemplars = None if exemplars is None else exemplars.permute(0, 2, 3, 1).squeeze(3).numpy()
        self.modules = run_modules(self.config, json.loads(meta["modules"]), self.classes)
        for name, module in self.modules.items():
            prefix = f"{name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
            module.eval()

    def __getitem__(self, name: str) -> nn.Module:
        return self.modules[name]

    @property
    def temperature(self) -> float:
        """What the classifier's logits are divided by before the softmax (1: uncalibrated)."""
        return 1.0 if self.calibration is None else self.calibration["temperature"]


def _calibration(text: str | None, path: Path) -> dict | None:
    if text is None:
        return None
    try:
        calibration = json.loads(text)
        if not calibration["temperature"] > 0:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise RunError(f"{path}: its calibration metadata is damaged ({shown(text)[:60]})") from None
    return calibration
