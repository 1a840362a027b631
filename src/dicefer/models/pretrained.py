"""Starting weights for the ResNet-18 trunks: torchvision's ImageNet weights or a state dict file.

FER repositories ship face-recognition ResNet-18s as .pth / .pth.tar (often nested under
'state_dict' or 'model', keys prefixed 'module.') or .safetensors. Files are read with
torch.load(weights_only=True) or safetensors, so loading never runs code from a pickle. The
classifier head (fc.*) is dropped; everything else must match, except BatchNorm's step counters.
"""
from __future__ import annotations

import logging
import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision.models import ResNet18_Weights

from dicefer.errors import UserError

HEAD = "fc."
NESTING = ("state_dict", "model")
OPTIONAL = ".num_batches_tracked"
log = logging.getLogger("dicefer")


class InitError(UserError):
    """Starting weights that cannot be used: the message says why and what to do."""


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:  # URLError, HTTPError, socket errors: all mean "not available here"
        raise InitError(
            f"could not download torchvision's ImageNet ResNet-18 weights ({err.__class__.__name__}: {err}). "
            "This machine is probably offline: use --init random, or put the file "
            f"{weights.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints/"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from 'state_dict' / 'model' and without 'module.' prefixes."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch's note on an old pickle protocol: the refusal below says it all
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused is None:
            raise InitError(f"{path} is not a PyTorch or safetensors weights file (it does not unpickle as one)") from None
        raise InitError(f"{path} holds Python objects besides tensors ({refused.group(1)}), which dicefer never unpickles; "
                        "save just the state dict (torch.save(model.state_dict(), ...)) or convert it to .safetensors") from None
    except (OSError, RuntimeError, EOFError, SafetensorError) as err:
        raise InitError(f"{path} is not a PyTorch or safetensors weights file ({err.__class__.__name__}: {err})") from None
    while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in NESTING):
        state = next(state[k] for k in NESTING if isinstance(state.get(k), dict))
    tensors = {_strip(k): v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise InitError(f"{path} holds no tensors (looked at the top level and under {' / '.join(NESTING)})")
    return tensors


def load_trunk(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a ResNet-18 state dict into torchvision's `net` (whose conv1 may take 1 channel), strictly
    except for the classifier head and BatchNorm's step counters; logs how many tensors matched."""
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(HEAD)}
    head = [k for k in state if k.startswith(HEAD)]
    state = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    first = state.get("conv1.weight")
    if first is not None and first.ndim == 4:
        state["conv1.weight"] = adapt_first_conv(first, expected["conv1.weight"].shape[1])
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL)]
    unexpected = [k for k in state if k not in expected]
    problems = [f"{what} {len(keys)} tensors: {', '.join(keys[:3])}" for what, keys in
                (("wrong shapes in", wrong), ("missing", missing), ("unexpected", unexpected)) if keys]
    matched = sum(k in state and state[k].shape == v.shape for k, v in expected.items())
    if problems:
        raise InitError(f"{source} is not a ResNet-18 state dict ({'; '.join(problems)}); {matched} of {len(expected)} "
                        "ResNet-18 tensors matched in name and shape")
    net.load_state_dict(state, strict=False)  # strict but for the head and BatchNorm step counters, checked above
    log.info("init %s: loaded %d of %d ResNet-18 tensors; ignored the classifier head (%d tensors)", source, matched,
             len(expected), len(head))


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters for gray input (or back): the channel sum spread evenly keeps the response to a gray image."""
    if weight.shape[1] == in_channels:
        return weight
    return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key
