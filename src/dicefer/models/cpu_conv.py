"""Faster CPU training on small inputs: convolution weight gradients on small maps as one matmul.

At the sizes CPU presets use (32-64 px), ResNet-18's layer3 and layer4 run on maps of 1x1 to 4x4.
There oneDNN's weight-gradient kernel is 3-10x slower than unfolding the input and multiplying
(measured on a 2-core AMD EPYC: 31 ms against 3.5 ms for a 512->512 3x3 conv on 32 maps of 1x1),
and a whole encoder step with fused Adam ran 1.5x faster at 32 px and 1.3x at 48 px
(benchmarks/cpu_conv_benchmark.py).
Larger maps keep PyTorch's own convolution, where the matmul is no faster. The forward pass and
the input gradient are PyTorch's; only the weight gradient is computed differently, to float
rounding. Checkpoints are unchanged: the module keeps `weight` under the same name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 16  # output positions (h * w) at or below which the matmul path is used


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
            cols = F.unfold(x, weight.shape[2:], padding=ctx.padding, stride=ctx.stride)  # N, Cin*k*k, L
            grad_w = torch.einsum("ncl,nkl->ck", grad_out.flatten(2), cols).view_as(weight)
        return grad_x, grad_w, None, None


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d (no bias, no groups, no dilation) whose weight gradient on small maps is a matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.shape[-2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        w = (x.shape[-1] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        if h * w > SMALL_MAP or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return super().forward(x)
        return _SmallMapConv.apply(x, self.weight, self.stride, self.padding)


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
