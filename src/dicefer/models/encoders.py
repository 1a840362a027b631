"""ResNet-18 trunks that end in a code (E or I) and also expose a feature map for local MI."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from dicefer.models.pretrained import imagenet_state_dict, load_trunk, read_state_dict


class Encoder(nn.Module):
    """torchvision ResNet-18 adapted to `in_channels`, with a `code_dim` linear head.

    `init`: 'random', 'imagenet' (torchvision's weights) or the path of a ResNet-18 state dict.
    `maxpool=False` drops the stem's max-pool: small faces (48 px) keep twice the resolution
    through every block, for about twice the compute; pretrained weights load either way.
    forward returns (code, feature_map): the feature map is layer3's output, the "local
    features" of Deep InfoMax against which the statistics networks score a code.
    """

    feature_channels = 256

    def __init__(self, code_dim: int = 64, in_channels: int = 1, init: str = "random", maxpool: bool = True) -> None:
        super().__init__()
        net = resnet18()
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if init == "imagenet":
            load_trunk(net, imagenet_state_dict(), "imagenet")
        elif init != "random":
            load_trunk(net, read_state_dict(Path(init).expanduser()), init)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, *([net.maxpool] if maxpool else []))
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.head = nn.Linear(512, code_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.layer3(self.layer2(self.layer1(self.stem(x))))
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer4(local), 1), 1)
        return self.head(pooled), local
