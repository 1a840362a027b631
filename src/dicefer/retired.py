"""Configs saved by earlier versions, read as this one: retired settings and renamed ones."""
from __future__ import annotations

from typing import Any

from dicefer.errors import ConfigError

# Settings of earlier versions, with the value that meant what this version does without them.
RETIRED = {("data", "crop_padding"): 0, ("data", "whiten"): True, ("data", "confounded"): True, ("data", "cache_dir"): None,
           ("model", "critic_dim"): 128, ("model", "classifier_hidden"): 256, ("model", "classifier_dropout"): 0.0,
           ("mi", "ema"): 0.01, ("mi", "temperature"): 0.1, ("stage1", "variance_weight"): 0.0,
           ("stage1", "l1_standardise"): False, ("stage1", "l1_relative"): False, ("stage3", "batch_size"): 256}


def without_retired(data: dict[str, Any], stage1_lr: float) -> dict[str, Any]:
    """A config saved by an earlier version, read as this one: retired settings at their neutral value
    are dropped (any other value is an error naming it), l1_whiten becomes l1_scale, and the learning
    rates that now follow stage1.lr (by default `stage1_lr`) must have been what they follow. Anything
    else is left to the config's own checks."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    section = lambda group: data[group] if isinstance(data.get(group), dict) else {}
    for (group, key), neutral in RETIRED.items():
        if key in section(group) and (value := section(group).pop(key)) != neutral and neutral is not None:
            raise ConfigError(f"{group}.{key}={value!r}: this setting was retired (docs/method.md says why); "
                              f"this version trains only as {group}.{key}={neutral!r} did")
    stage1 = section("stage1")
    if "l1_whiten" in stage1 and isinstance(stage1["l1_whiten"], bool):
        stage1["l1_scale"] = "whitened" if stage1.pop("l1_whiten") else "raw"
    lr = stage1.get("lr", stage1_lr)
    for group, key, follows, factor in (("supervised", "lr", "stage1.lr", 1), ("stage3", "finetune_lr", "stage1.lr / 10", 10)):
        if key in section(group) and isinstance(lr, float) and section(group).pop(key) != lr / factor:
            raise ConfigError(f"{group}.{key} was retired: it is now {follows}, and this config's differs")
    return data
