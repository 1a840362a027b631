"""Training checkpoints: every tensor in one safetensors file, everything else (the nested record's
structure, numbers, random states) as JSON in its metadata; nothing is pickled.
"""
from __future__ import annotations

import json
import os
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from dicefer.errors import RunError
from dicefer.paths import atomic_write
from dicefer.run import CHECKPOINT, PREVIOUS

logger = logging.getLogger("dicefer")

CHECKPOINT_FORMAT = "dicefer-checkpoint/2"
FORMAT_1 = "dicefer-checkpoint/1"  # each object of a stage under its own name; read as format 2 (_from_format_1)


def save_checkpoint(path: Path, record: dict) -> None:
    """Write `record` (nested dicts, lists, tensors, JSON scalars) as one safetensors file, read it
    back, and only then let it replace the checkpoint before it, which stays as PREVIOUS."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(record, "", tensors)
    meta = {"format": CHECKPOINT_FORMAT, "record": json.dumps(tree)}

    def write_verified(tmp: str) -> None:
        save_file(tensors, tmp, metadata=meta)
        load_checkpoint(Path(tmp))  # a RunError here keeps both earlier checkpoints
        if path.is_file():
            os.replace(path, path.with_name(PREVIOUS))

    atomic_write(path, write_verified)


def load_latest_checkpoint(run_dir: Path) -> dict:
    """The run's checkpoint, or the one before it (with a warning) when the latest is unreadable."""
    latest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    try:
        return load_checkpoint(latest)
    except RunError as err:
        if not previous.is_file():
            raise
        record = load_checkpoint(previous)
        logger.warning("%s; resuming from %s, the checkpoint before it", err, previous.name)  # one line, as every message
        return record


def load_checkpoint(path: Path) -> dict:
    """The record `save_checkpoint` wrote; a RunError for anything else (a pickle, a truncated file)."""
    if not path.is_file():
        raise RunError(f"{path.parent} has no checkpoint to resume from ({path.name} is missing); "
                       f"start it again with `dicefer train --out {path.parent} --overwrite`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") not in (CHECKPOINT_FORMAT, FORMAT_1):
            raise RunError(f"{path} is not a dicefer training checkpoint (no '{CHECKPOINT_FORMAT}' metadata)")
        record = _unpack(json.loads(meta["record"]), load_file(str(path)))
        return _from_format_1(record) if meta["format"] == FORMAT_1 else record
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise RunError(f"{path} is not a readable dicefer checkpoint ({err.__class__.__name__}: {err})") from None


def _from_format_1(record: dict) -> dict:
    """A checkpoint of an earlier version, whose state named each object of the stage apart
    ("expression", "stage1.mi", "stage1.opt", "stage1.l1", "stage2.shuffles", ...), as the stage's
    state_dict and its optimisers' states in order (the stage's own object names had it first)."""
    stage, flat, optimizers = record["position"]["stage"], {}, []
    for name, state in record["state"].items():
        local = name.removeprefix(stage + ".")
        if local in ("opt", "opt_disc"):
            optimizers.append(state)
        elif local == "l1":
            flat["l1_active"] = torch.tensor(state["l1_on"])
        elif local == "shuffles":
            flat["_extra_state"] = state["state"]
        else:
            flat.update({f"{local}.{key}": value for key, value in state.items()})
    return {**record, "state": {"stage": flat, "optimizers": optimizers}}


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
