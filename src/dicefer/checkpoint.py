"""Run folders: weights as safetensors with their config and class names in the metadata.

Nothing here unpickles: a run is safetensors + JSON + YAML, so loading a run folder from
someone else can never execute code.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open
from torch import nn

from .config import TrainConfig, from_dict, to_dict
from .data.base import CLASSES
from .errors import RunError
from .models.encoders import Encoder
from .models.heads import Classifier

MODEL_FILE = "model.safetensors"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: Path, modules: dict[str, nn.Module], cfg: TrainConfig, stage: str,
               classes: Sequence[str] = CLASSES) -> None:
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    meta = {"config": json.dumps(to_dict(cfg)), "classes": json.dumps(list(classes)), "stage": stage,
            "modules": json.dumps(sorted(modules))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


class LoadedRun:
    """A trained run rebuilt from its folder alone: config, class names and modules in eval mode."""

    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        path = run_dir / MODEL_FILE
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
        self.classes = tuple(json.loads(meta["classes"]))
        self.stage = meta.get("stage", "")
        self.modules = build_inference_modules(self.config, json.loads(meta["modules"]), self.classes)
        for name, module in self.modules.items():
            prefix = f"{name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
            module.eval()

    def __getitem__(self, name: str) -> nn.Module:
        return self.modules[name]


def build_inference_modules(cfg: TrainConfig, names: list[str], classes: Sequence[str] = CLASSES) -> dict[str, nn.Module]:
    channels = 1 if cfg.data.grayscale else 3
    factory = {
        "expression": lambda: Encoder(cfg.model.code_dim, channels),
        "identity": lambda: Encoder(cfg.model.code_dim, channels),
        "classifier": lambda: Classifier(cfg.model.code_dim, len(classes), cfg.model.classifier_hidden),
    }
    unknown = set(names) - set(factory)
    if unknown:
        raise RunError(f"unknown modules in checkpoint: {sorted(unknown)}")
    return {name: factory[name]() for name in names}

