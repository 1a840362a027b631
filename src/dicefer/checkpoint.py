"""Run folders: weights as safetensors with their config and class names in the metadata, and
training checkpoints (every tensor in safetensors, everything else as JSON in its metadata).

Nothing here unpickles: a run is safetensors + JSON + YAML, so loading a run folder from
someone else can never execute code.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from . import runfolder
from .config import TrainConfig, from_dict, to_dict
from .data.base import CLASSES
from .errors import RunError
from .models.encoders import Encoder
from .models.heads import Classifier

MODEL_FILE, CHECKPOINT_FILE, PREVIOUS_FILE = runfolder.MODEL, runfolder.CHECKPOINT, runfolder.PREVIOUS
CHECKPOINT_FORMAT = "dicefer-checkpoint/1"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


EXEMPLARS, EXEMPLARS_KEY = 64, "framing.exemplars"  # uint8 (N, C, S, S) training faces, for inference/framing.py


def save_model(path: Path, modules: dict[str, nn.Module], cfg: TrainConfig, stage: str,
               classes: Sequence[str] = CLASSES, exemplars: torch.Tensor | None = None) -> None:
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    if exemplars is not None:
        tensors[EXEMPLARS_KEY] = exemplars.contiguous()
    meta = {"config": json.dumps(to_dict(cfg)), "classes": json.dumps(list(classes)), "stage": stage,
            "modules": json.dumps(sorted(modules))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    """RUN/config.yaml: the resolved config, for people to read and for --resume."""
    (Path(run_dir) / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


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
        exemplars = tensors.get(EXEMPLARS_KEY)  # runs written before exemplars were kept have none
        self.exemplars = None if exemplars is None else exemplars.permute(0, 2, 3, 1).squeeze(3).numpy()
        self.modules = build_inference_modules(self.config, json.loads(meta["modules"]), self.classes)
        for name, module in self.modules.items():
            prefix = f"{name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
            module.eval()

    def __getitem__(self, name: str) -> nn.Module:
        return self.modules[name]


def new_classifier(cfg: TrainConfig, num_classes: int) -> Classifier:
    """The classifier as the config shapes it: Stage 3's, the baseline's head, and the one a run loads."""
    return Classifier(cfg.model.code_dim, num_classes, cfg.model.classifier_hidden, cfg.model.classifier_dropout)


def build_inference_modules(cfg: TrainConfig, names: list[str], classes: Sequence[str] = CLASSES) -> dict[str, nn.Module]:
    channels = 1 if cfg.data.grayscale else 3
    factory = {
        "expression": lambda: Encoder(cfg.model.code_dim, channels, maxpool=cfg.model.maxpool),
        "identity": lambda: Encoder(cfg.model.code_dim, channels, maxpool=cfg.model.maxpool),
        "classifier": lambda: new_classifier(cfg, len(classes)),
    }
    unknown = set(names) - set(factory)
    if unknown:
        raise RunError(f"unknown modules in checkpoint: {sorted(unknown)}")
    return {name: factory[name]() for name in names}



# ---------------- training checkpoints ----------------

class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> Any: ...


class Attributes:
    """Plain attributes of an object as a state_dict (Stage 1's `l1_on` switch)."""

    def __init__(self, obj: object, *names: str) -> None:
        self.obj, self.names = obj, names

    def state_dict(self) -> dict:
        return {name: getattr(self.obj, name) for name in self.names}

    def load_state_dict(self, state: dict) -> None:
        for name in self.names:
            setattr(self.obj, name, state[name])


class GeneratorState:
    """A torch.Generator as a state_dict (Stage 2's shuffles)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def save_checkpoint(path: Path, record: dict) -> None:
    """Write `record` (nested dicts, lists, tensors, JSON scalars) as one safetensors file, read it
    back, and only then let it replace the checkpoint before it, which stays as PREVIOUS_FILE."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(record, "", tensors)
    meta = {"format": CHECKPOINT_FORMAT, "record": json.dumps(tree)}

    def write_verified(tmp: str) -> None:
        save_file(tensors, tmp, metadata=meta)
        load_checkpoint(Path(tmp))  # a RunError here keeps both earlier checkpoints
        if path.is_file():
            os.replace(path, path.with_name(PREVIOUS_FILE))

    atomic_write(path, write_verified)


def load_latest_checkpoint(run_dir: Path) -> dict:
    """The run's checkpoint, or the one before it (with a warning) when the latest is unreadable."""
    latest, previous = run_dir / CHECKPOINT_FILE, run_dir / PREVIOUS_FILE
    try:
        return load_checkpoint(latest)
    except RunError as err:
        if not previous.is_file():
            raise
        record = load_checkpoint(previous)
        warnings.warn(f"{err}; resuming from {previous.name}, the checkpoint before it", stacklevel=2)
        return record


def load_checkpoint(path: Path) -> dict:
    """The record `save_checkpoint` wrote; a RunError for anything else (a pickle, a truncated file)."""
    if not path.is_file():
        raise RunError(f"{path.parent} has no checkpoint to resume from ({path.name} is missing); "
                       f"start it again with `dicefer train --out {path.parent} --overwrite`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"{path} is not a dicefer training checkpoint (no '{CHECKPOINT_FORMAT}' metadata)")
        return _unpack(json.loads(meta["record"]), load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise RunError(f"{path} is not a readable dicefer checkpoint ({err.__class__.__name__}: {err})") from None


def _pack(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        items = [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in obj.items()]
        return dict(items) if all(isinstance(k, str) for k in obj) else {"__items__": items}
    if isinstance(obj, (list, tuple)):
        packed = [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": packed} if isinstance(obj, tuple) else packed
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} (at '{key}')")


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unpack(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__tuple__" in node:
        return tuple(_unpack(v, tensors) for v in node["__tuple__"])
    if "__items__" in node:
        return {k: _unpack(v, tensors) for k, v in node["__items__"]}
    return {k: _unpack(v, tensors) for k, v in node.items()}


def capture_rng(dataset: object = None) -> dict:
    """Every random state a training step can touch: Python, NumPy, torch (CPU, CUDA), the dataset's augmentation."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if isinstance(getattr(dataset, "rng", None), random.Random):
        state["data"] = dataset.rng.getstate()
    return state


def restore_rng(state: dict, dataset: object = None) -> None:
    """Undo `capture_rng`; the dataset's augmentation state only when `dataset` is given."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if dataset is not None and "data" in state:
        dataset.rng.setstate(state["data"])
