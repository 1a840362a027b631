"""Faster CPU training on small inputs: convolution weight gradients on small maps as one matmul.

At the sizes CPU presets use (32-64 px), ResNet-18's layer3 and layer4 run on maps of 1x1 to 4x4.
Whether oneDNN's weight-gradient kernel or unfolding the input and multiplying is faster there
depends on the CPU (on some the matmul is several times faster, on others oneDNN wins;
benchmarks/cpu_conv_benchmark.py). So each convolution
times both on random tensors of its own shapes, once per machine, and keeps the faster, like
cuDNN's benchmark mode; the choice is stored on disk so that every later run on the machine
(a resumed one included) computes the same gradients bit for bit.
Larger maps keep PyTorch's own convolution. The forward pass and the input gradient are
PyTorch's; only the weight gradient is computed differently, to float rounding. Checkpoints are
unchanged: the module keeps `weight` under the same name.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dicefer.data.cache import default_cache_dir

SMALL_MAP = 16  # output positions (h * w) at or below which the matmul path is a candidate
_choices: dict[str, bool] = {}  # shape key -> the matmul is faster on this machine


def _matmul_weight_grad(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, stride, padding) -> torch.Tensor:
    cols = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)  # N, Cin*k*k, L
    return torch.einsum("ncl,nkl->ck", grad_out.flatten(2), cols).view_as(weight)


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_w = _matmul_weight_grad(x, weight, grad_out, ctx.stride, ctx.padding)
        return grad_x, grad_w, None, None


def machine_signature() -> str:
    """What the choice depends on: the CPU model, the thread count and the PyTorch build."""
    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}|{torch.get_num_threads()} threads|torch {torch.__version__}"


def _store() -> Path:
    digest = hashlib.sha1(machine_signature().encode()).hexdigest()[:12]
    return default_cache_dir() / f"conv_paths-{digest}.json"


def _measure(x_shape, w_shape, stride, padding, dtype: torch.dtype, rounds: int = 5) -> bool:
    """Time PyTorch's convolution backward (input and weight gradients in one call) against the
    input gradient plus the matmul, on random tensors from a generator of their own (training's
    random stream is untouched); True when the matmul's median is lower."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(x_shape, generator=gen, dtype=dtype), torch.randn(w_shape, generator=gen, dtype=dtype)
    g = torch.randn(F.conv2d(x, w, None, stride, padding).shape, generator=gen, dtype=dtype)
    paths = {False: lambda: torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, (1, 1), False,
                                                                 (0, 0), 1, [True, True, False]),
             True: lambda: (torch.nn.grad.conv2d_input(x.shape, w, g, stride, padding),
                            _matmul_weight_grad(x, w, g, stride, padding))}
    times = {k: [] for k in paths}
    for i in range(rounds + 1):
        for k, run in paths.items():
            start = time.perf_counter()
            run()
            if i:  # the first round warms up
                times[k].append(time.perf_counter() - start)
    return statistics.median(times[True]) < statistics.median(times[False])


def matmul_is_faster(x_shape, w_shape, stride, padding, dtype: torch.dtype = torch.float32) -> bool:
    """The stored choice for these shapes, measured and stored on first use on this machine."""
    key = f"{tuple(x_shape)}|{tuple(w_shape)}|{tuple(stride)}|{tuple(padding)}|{dtype}"
    if key not in _choices:
        path = _store()
        try:
            _choices.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
        if key not in _choices:
            _choices[key] = _measure(x_shape, w_shape, stride, padding, dtype)
            _save(path)
    return _choices[key]


def _save(path: Path) -> None:
    """Write atomically, so processes started together (torchrun) never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_choices, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: choices are measured again by the next process


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d (no bias, no groups, no dilation) whose weight gradient on small maps is a matmul
    where that is faster on this machine, in fp32 and under bf16 autocast alike (`under_autocast`:
    False keeps PyTorch's convolution under autocast, as dicefer did before 2026-12-06).

    Under autocast the input and weight are cast to the autocast type here, as autocast would cast
    them for a convolution, so the matmul runs in that type too; the weight's gradient flows back
    through the cast to the fp32 weight."""

    under_autocast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.shape[-2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        w = (x.shape[-1] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        if h * w > SMALL_MAP or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled(x.device.type):
            if not self.under_autocast:
                return super().forward(x)
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        if not matmul_is_faster(x.shape, weight.shape, self.stride, self.padding, x.dtype):
            return super().forward(x)
        return _SmallMapConv.apply(x, weight, self.stride, self.padding)


def _convertible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.bias is None and conv.groups == 1
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def use_small_map_convs(module: nn.Module) -> nn.Module:
    """Swap, in place, every plain bias-free Conv2d of `module` for a SmallMapConv2d sharing its weight."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if _convertible(child):
                fast = SmallMapConv2d(child.in_channels, child.out_channels, child.kernel_size,
                                      child.stride, child.padding, bias=False,
                                      device=child.weight.device, dtype=child.weight.dtype)
                fast.weight = child.weight
                setattr(parent, name, fast)
    return module
