"""Convolutions on maps of a few positions, rewritten as one matrix product for the ONNX export.

On a 48 px face ResNet-18's layer4 runs on 2x2 maps. onnxruntime's CPU convolution multiplies
each image's unfolded map on its own, a product only 4 columns wide, and 9 kernel taps per
position although at most 4 fall inside the map. An exported model's input size is fixed, so such
a convolution is a fixed linear map of the flattened input: one (batch, C*H*W) x (C*H*W, C'*H'*W')
product for the whole batch, with no multiply-adds on the padding: faster at large batches,
slower at batch 1, where reading the larger matrices dominates. PyTorch's convolution gains
little from it (docs/benchmarks.md), so only the export uses it.
"""
from __future__ import annotations

import torch
from torch import nn

MAX_POSITIONS = 4  # output positions (h * w) at or below which a convolution is rewritten


class DenseConv(nn.Module):
    """`conv` applied to inputs of shape (N, *in_shape), as the matrix of its linear map.

    The matrix holds the convolution of every basis image, so it is the same map to float
    rounding; a batch norm folded into `conv` comes along as its bias.
    """

    def __init__(self, conv: nn.Conv2d, in_shape: torch.Size) -> None:
        super().__init__()
        c, h, w = in_shape
        with torch.no_grad():
            basis = torch.eye(c * h * w, dtype=conv.weight.dtype).view(-1, c, h, w)
            response = nn.functional.conv2d(basis, conv.weight, None, conv.stride, conv.padding,
                                            conv.dilation, conv.groups)
            bias = torch.zeros(conv.out_channels) if conv.bias is None else conv.bias.detach()
        self.out_shape = tuple(response.shape[1:])
        self.register_buffer("weight", response.flatten(1).contiguous())
        self.register_buffer("bias", bias.repeat_interleave(self.out_shape[1] * self.out_shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.flatten(1), self.weight).view(-1, *self.out_shape)


def densify_small_maps(model: nn.Module, example: torch.Tensor) -> int:
    """Replace, in place, each convolution whose output has at most MAX_POSITIONS positions and
    whose input has no more positions than its kernel has taps (so the matrix does no more
    multiply-adds than the unfolded convolution), as seen on `example`. Returns how many."""
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            shapes[name] = (args[0].shape[1:], out.shape[1:])
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if type(module) is nn.Conv2d]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    replaced = 0
    for name, (in_shape, out_shape) in shapes.items():
        conv = model.get_submodule(name)
        taps = conv.kernel_size[0] * conv.kernel_size[1]
        if out_shape[1] * out_shape[2] <= MAX_POSITIONS and in_shape[1] * in_shape[2] <= taps:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, DenseConv(conv, in_shape))
            replaced += 1
    return replaced
