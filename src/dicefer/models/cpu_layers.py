"""Faster CPU training on small inputs: convolutions on small maps as matrix products, and the
max pool in channels_last.

At the sizes CPU presets use (32-64 px), ResNet-18's layer3 and layer4 run on maps of 1x1 to 4x4,
where oneDNN's convolution kernels use the hardware poorly (in bf16 above all). Two other ways
to compute such a convolution and its gradients, for maps of up to SMALL_MAP output positions:
- `matmul_grad`: PyTorch's forward and input gradient, the weight gradient as one matmul of the
  unfolded input;
- `im2col`: forward and both gradients as matrix products of the weight and the whole batch's
  unfolded input (one product each, not one per image).
Which of these and PyTorch's own convolution (`conv`) is fastest depends on the CPU and the
precision (benchmarks/cpu_steps.py, benchmarks/cpu_conv_benchmark.py). So each convolution times
its candidates on random tensors of its own shapes, once per machine, and keeps the fastest, like
cuDNN's benchmark mode; the choice is stored on disk so that every later run on the machine (a
resumed one included) computes the same gradients bit for bit. All paths compute the same
convolution to float rounding. Checkpoints are unchanged: the module keeps `weight` under the same name.

PyTorch's CPU max pool on NCHW maps is several times slower than on channels_last ones, which
give the same maxima and gradients bit for bit; so the pool runs on a channels_last copy.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dicefer.data.cache import default_cache_dir

PATHS = ("conv", "matmul_grad", "im2col")
SMALL_MAP = 16  # output positions (h * w) at or below which the matrix products are candidates
_choices: dict[str, str] = {}  # shape key -> the fastest path on this machine


@functools.cache
def _unfolding(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple, padding: tuple,
               dtype: torch.dtype) -> torch.Tensor:
    """(H*W, k*k*L) of ones and zeros: which input position each kernel tap at each output position reads."""
    h, w = in_hw
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w)
    linked = F.unfold(index, kernel, padding=padding, stride=stride)[0].long()  # k*k, L: input index + 1, 0 on padding
    return F.one_hot(linked, h * w + 1)[..., 1:].permute(2, 0, 1).reshape(h * w, -1).to(dtype).contiguous()


def _unfold(x: torch.Tensor, kernel: tuple[int, int], stride: tuple, padding: tuple) -> torch.Tensor:
    """F.unfold as a product with a 0/1 matrix: the same columns, about 10x faster on small maps (so is
    its gradient, the product with the transpose, against F.fold)."""
    n, c, h, w = x.shape
    ones = _unfolding((h, w), tuple(kernel), tuple(stride), tuple(padding), x.dtype)
    return (x.reshape(n * c, h * w) @ ones).view(n, c * kernel[0] * kernel[1], -1)


def _matmul_weight_grad(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, stride, padding) -> torch.Tensor:
    cols = _unfold(x, weight.shape[2:], stride, padding)  # N, Cin*k*k, L
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


def _im2col_conv(x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple) -> torch.Tensor:
    """The convolution as one matrix product of the weight and the whole batch's unfolded input;
    autograd computes both gradients as products too."""
    out_c, n = weight.shape[0], x.shape[0]
    cols = _unfold(x, weight.shape[2:], stride, padding)  # N, Cin*k*k, L
    out = weight.reshape(out_c, -1) @ cols.transpose(0, 1).reshape(cols.shape[1], -1)  # Cout, N*L
    out_h = (x.shape[-2] + 2 * padding[0] - weight.shape[2]) // stride[0] + 1
    return out.view(out_c, n, out_h, -1).transpose(0, 1)


_PATH_FUNCTIONS: dict[str, Callable] = {
    "conv": lambda x, w, stride, padding: F.conv2d(x, w, None, stride, padding),
    "matmul_grad": _SmallMapConv.apply,
    "im2col": _im2col_conv,
}


def candidates(x_shape, w_shape, stride, padding, allowed=PATHS) -> tuple[str, ...]:
    """PyTorch's convolution, and the paths of `allowed` meant for a convolution of these shapes."""
    h = (x_shape[-2] + 2 * padding[0] - w_shape[-2]) // stride[0] + 1
    w = (x_shape[-1] + 2 * padding[1] - w_shape[-1]) // stride[1] + 1
    return ("conv", *(p for p in allowed if p != "conv" and h * w <= SMALL_MAP))


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
    return default_cache_dir() / f"conv_choices-{digest}.json"


def _measure(x_shape, w_shape, stride, padding, dtype: torch.dtype, paths: tuple[str, ...], rounds: int = 5) -> str:
    """Time forward and backward (input and weight gradients) of each path on random tensors from a
    generator of their own (training's random stream is untouched); the path with the lowest median."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen, dtype=dtype).requires_grad_()
    w = torch.randn(w_shape, generator=gen, dtype=dtype).requires_grad_()
    g = torch.randn(F.conv2d(x.detach(), w.detach(), None, stride, padding).shape, generator=gen, dtype=dtype)
    times: dict[str, list[float]] = {p: [] for p in paths}
    for i in range(rounds + 1):
        for path in paths:
            start = time.perf_counter()
            torch.autograd.grad(_PATH_FUNCTIONS[path](x, w, stride, padding), (x, w), g)
            if i:  # the first round warms up
                times[path].append(time.perf_counter() - start)
    return min(paths, key=lambda p: statistics.median(times[p]))


def fastest_path(x_shape, w_shape, stride, padding, dtype: torch.dtype = torch.float32,
                 allowed: tuple[str, ...] = PATHS) -> str:
    """The stored choice among the paths meant for these shapes, measured and stored on first use on this machine."""
    paths = candidates(x_shape, w_shape, stride, padding, allowed)
    if len(paths) == 1:
        return paths[0]
    key = f"{tuple(x_shape)}|{tuple(w_shape)}|{tuple(stride)}|{tuple(padding)}|{dtype}|{'+'.join(paths)}"
    if key not in _choices:
        path = _store()
        try:
            _choices.update({k: v for k, v in json.loads(path.read_text()).items() if v in PATHS})
        except (OSError, ValueError, AttributeError):
            pass
        if key not in _choices:
            _choices[key] = _measure(x_shape, w_shape, stride, padding, dtype, paths)
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
    """nn.Conv2d (no bias, no groups, no dilation) that trains on small maps by the path this
    machine measured fastest, in fp32 and under bf16 autocast alike. `allowed` narrows the paths
    (benchmarks compare them); `under_autocast` False keeps PyTorch's convolution under autocast,
    as dicefer did before 2026-12-06.

    Under autocast the input and weight are cast to the autocast type here, as autocast would cast
    them for a convolution, so the products run in that type too; the weight's gradient flows back
    through the cast to the fp32 weight. Without gradients (evaluation) PyTorch's convolution runs,
    and so it does under torch.compile: the choice reads a file and times kernels, which has no place
    in a traced graph, and a compiled ResNet-18 with the traced choice gave NaN gradients under bf16."""

    allowed: tuple[str, ...] = PATHS
    under_autocast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad) or torch.compiler.is_compiling():
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled(x.device.type):
            if not self.under_autocast:
                return super().forward(x)
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        path = fastest_path(x.shape, weight.shape, self.stride, self.padding, x.dtype, self.allowed)
        if path == "conv":
            return super().forward(x)
        return _PATH_FUNCTIONS[path](x, weight, self.stride, self.padding)


def _convertible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.bias is None and conv.groups == 1
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


class _ToChannelsLast(torch.autograd.Function):
    """A channels_last copy whose gradient comes back in the default layout (PyTorch's own copy
    would hand the next layer back a channels_last gradient, and ReLU's backward is slow on that)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d that pools a CPU batch in channels_last and hands it back in the default layout:
    the same output and gradient, from PyTorch's faster kernel. `channels_last` False pools in the
    input's layout (benchmarks compare)."""

    channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last or x.device.type != "cpu" or x.dim() != 4:
            return super().forward(x)
        return super().forward(_ToChannelsLast.apply(x)).contiguous()


def use_fast_cpu_layers(module: nn.Module) -> nn.Module:
    """Swap, in place, every plain bias-free Conv2d of `module` for a SmallMapConv2d sharing its
    weight, and every MaxPool2d for a ChannelsLastMaxPool2d (neither holds other state)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if _convertible(child):
                fast = SmallMapConv2d(child.in_channels, child.out_channels, child.kernel_size,
                                      child.stride, child.padding, bias=False,
                                      device=child.weight.device, dtype=child.weight.dtype)
                fast.weight = child.weight
                setattr(parent, name, fast)
            elif type(child) is nn.MaxPool2d:
                setattr(parent, name, ChannelsLastMaxPool2d(child.kernel_size, child.stride, child.padding,
                                                            child.dilation, child.return_indices, child.ceil_mode))
    return module
