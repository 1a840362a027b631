"""ResNet-18 trunks that end in a code (E or I) and also expose a feature map for local MI."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18


class Encoder(nn.Module):
    """torchvision ResNet-18 adapted to `in_channels`, with a `code_dim` linear head.

    forward returns (code, feature_map): the feature map is layer3's output, the "local
    features" of Deep InfoMax against which the statistics networks score a code.
    """

    feature_channels = 256

    def __init__(self, code_dim: int = 64, in_channels: int = 1, init: str = "random") -> None:
        super().__init__()
        net = resnet18(weights=_imagenet_weights() if init == "imagenet" else None)
        if in_channels != 3:
            rgb = net.conv1.weight.data
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            if init == "imagenet":  # grayscale: sum of the RGB filters keeps the response to a gray image
                net.conv1.weight.data = rgb.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.head = nn.Linear(512, code_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.layer3(self.layer2(self.layer1(self.stem(x))))
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer4(local), 1), 1)
        return self.head(pooled), local


def _imagenet_weights() -> ResNet18_Weights:
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        weights.get_state_dict(progress=False)
    except Exception as err:  # URLError, HTTPError, socket errors: all mean "not available here"
        raise RuntimeError(
            f"could not download torchvision's ImageNet ResNet-18 weights ({err.__class__.__name__}: {err}). "
            "This machine is probably offline: use --init random, or put the file "
            f"{weights.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints/"
        ) from None
    return weights
