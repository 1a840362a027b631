"""Starting weights for the encoders' trunks: torchvision's ImageNet weights or a state dict file.

FER repositories ship face-recognition ResNet-18s as .pth / .pth.tar (often nested under
'state_dict' or 'model', keys prefixed 'module.') or .safetensors; MobileFaceNet checkpoints nest
theirs under 'net_state_dict'. Files are read with torch.load(weights_only=True) or safetensors,
so loading never runs code from a pickle. What a file holds beyond the trunk (ResNet-18's
classifier fc.*, MobileFaceNet's embedding linear7.* / linear1.*) is dropped; everything else must
match in name and shape, except BatchNorm's step counters.
"""
from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision.models import ResNet18_Weights

from dicefer.errors import UserError
from dicefer.paths import shown

NESTING = ("state_dict", "model", "net_state_dict")
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
    except IsADirectoryError:
        raise InitError(f"{path} is a folder; give the weights file in it") from None
    except (OSError, RuntimeError, EOFError, SafetensorError) as err:
        raise InitError(f"{path} is not a PyTorch or safetensors weights file ({err.__class__.__name__}: {shown(str(err))})") from None
    except Exception as err:  # noqa: BLE001 -- torch's unpickler fails on arbitrary bytes with any error (KeyError, IndexError, ...)
        raise InitError(f"{path} is not a PyTorch or safetensors weights file (it does not unpickle as one: "
                        f"{err.__class__.__name__})") from None
    while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in NESTING):
        state = next(state[k] for k in NESTING if isinstance(state.get(k), dict))
    tensors = {_strip(k): v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise InitError(f"{path} holds no tensors (looked at the top level and under {' / '.join(NESTING)})")
    return tensors


@dataclass(frozen=True)
class Layout:
    """How a backbone's weights files are laid out: which tensor is the first convolution (adapted
    to the input's channels), what a file holds beyond the trunk (dropped), what the network holds
    that no file provides (its own head, left as initialised)."""

    name: str
    first_conv: str
    file_only: tuple[str, ...] = ()
    net_only: tuple[str, ...] = ()


RESNET18 = Layout("ResNet-18", "conv1.weight", file_only=("fc.",), net_only=("fc.",))


def load_trunk(net: nn.Module, state: dict[str, torch.Tensor], source: str, layout: Layout = RESNET18) -> None:
    """Load a state dict into `net` (whose first convolution may take 1 channel), strictly except
    for what `layout` names and BatchNorm's step counters; logs how many tensors matched."""
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(layout.net_only)}
    dropped = [k for k in state if k.startswith(layout.file_only)]
    state = {k: v for k, v in state.items() if not k.startswith(layout.file_only)}
    first = state.get(layout.first_conv)
    if first is not None and first.ndim == 4 and layout.first_conv in expected:
        state[layout.first_conv] = adapt_first_conv(first, expected[layout.first_conv].shape[1])
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL)]
    unexpected = [k for k in state if k not in expected]
    problems = [f"{what} {len(keys)} tensors: {', '.join(keys[:3])}" for what, keys in
                (("wrong shapes in", wrong), ("missing", missing), ("unexpected", unexpected)) if keys]
    matched = sum(k in state and state[k].shape == v.shape for k, v in expected.items())
    if problems:
        raise InitError(f"{source} is not a {layout.name} state dict ({'; '.join(problems)}); {matched} of {len(expected)} "
                        f"{layout.name} tensors matched in name and shape")
    net.load_state_dict(state, strict=False)  # strict but for the layout's exceptions and BatchNorm step counters, checked above
    log.info("init %s: loaded %d of %d %s tensors; ignored %d tensors beyond the trunk (%s)", source, matched,
             len(expected), layout.name, len(dropped), ", ".join(layout.file_only) or "none")


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters for gray input (or back). For gray input each filter becomes the sum of its R, G and B
    filters: exactly what the network computes on a gray image given as R = G = B."""
    if weight.shape[1] == in_channels:
        return weight
    return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key
