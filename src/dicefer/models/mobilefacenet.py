"""MobileFaceNet (Chen, Liu, Gao, Han 2018), built from the paper's table so that face-recognition
checkpoints in the common PyTorch layout (`conv1`, `dw_conv1`, `blocks.0` ... `blocks.14`,
`conv2`, `linear7`, `linear1`) load into it by name.

Its embedding layers end in a depthwise convolution over the whole 7x6 map of a 112x96 face, so
they fit that input size alone. As an encoder, the trunk therefore ends at `conv2` (512 channels),
averaged over the map, and a linear head gives the code: any input size works, and the
face-recognition features up to `conv2` are those the checkpoint trained.
"""
from __future__ import annotations

import torch
from torch import nn

# (expansion t, channels c, repeats n, stride of the first s): the paper's bottleneck table
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
LOCAL_BLOCKS = 12  # blocks.0..11 end at stride 8, the map before the last downsampling: Deep InfoMax's local features
EMBEDDING = ("linear7.", "linear1.")  # the face-recognition embedding, fixed to a 7x6 map: not part of the encoder


class ConvUnit(nn.Module):
    """conv (no bias) -> BatchNorm -> PReLU (none for the linear units), under the checkpoint's names."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding: int = 0,
                 groups: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.Identity() if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection; a residual sum when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def bottlenecks() -> nn.Sequential:
    blocks, cin = [], 64
    for t, c, n, s in BOTTLENECKS:
        for i in range(n):
            blocks.append(Bottleneck(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*blocks)


class MobileFaceNetEncoder(nn.Module):
    """E or I on a MobileFaceNet trunk: forward returns (code, feature map), the map being the
    128-channel output of blocks.0..11 (stride 8), against which the local MI critic scores a code."""

    feature_channels = 128

    def __init__(self, code_dim: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = ConvUnit(in_channels, 64, 3, 2, 1)
        self.dw_conv1 = ConvUnit(64, 64, 3, 1, 1, groups=64)
        self.blocks = bottlenecks()
        self.conv2 = ConvUnit(128, 512, 1)
        self.head = nn.Linear(512, code_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dw_conv1(self.conv1(x))
        for i, block in enumerate(self.blocks):  # not slices of it: torch.fx (the inference backend's fuse) traces this
            x = block(x)
            if i == LOCAL_BLOCKS - 1:
                local = x
        return self.head(self.conv2(x).mean(dim=(2, 3))), local


class MobileFaceNet(nn.Module):
    """The whole face-recognition network at 112x96: the trunk, then the embedding (128-d). Used
    as a reference for how much identity a code holds (evaluation/identity.py), never trained here."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = ConvUnit(in_channels, 64, 3, 2, 1)
        self.dw_conv1 = ConvUnit(64, 64, 3, 1, 1, groups=64)
        self.blocks = bottlenecks()
        self.conv2 = ConvUnit(128, 512, 1)
        self.linear7 = ConvUnit(512, 512, (7, 6), groups=512, linear=True)
        self.linear1 = ConvUnit(512, 128, 1, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.blocks(self.dw_conv1(self.conv1(x))))
        return torch.flatten(self.linear1(self.linear7(x)), 1)
