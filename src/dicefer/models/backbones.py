"""The encoder backbones by name (model.backbone), each with what it expects as input.

A backbone's input declaration (aspect, channels it was pretrained on, pixel scaling) decides how
every face reaches it, in training, evaluation, predict and an ONNX export alike: build.face_input
turns it and the run's data settings into the one FaceInput that all of them use.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dicefer.models.encoders import Encoder
from dicefer.models.mobilefacenet import EMBEDDING, MobileFaceNetEncoder
from dicefer.models.pretrained import InitError, Layout, load_trunk, read_state_dict


@dataclass(frozen=True)
class Backbone:
    build: Callable[[int, int, str, bool], nn.Module]  # (code_dim, in_channels, init, maxpool) -> encoder
    feature_channels: int  # of the feature map the encoder returns beside its code (the local MI critic's input)
    aspect: float       # input width / height: faces are resized to size x round(size * aspect)
    scaling: str        # how pixels are scaled: see data.transforms.FaceInput
    pretrained_on: str  # the input its face-recognition weights expect, for messages and docs


MOBILEFACENET = Layout("MobileFaceNet", "conv1.conv.weight", file_only=EMBEDDING, net_only=("head.",))  # the encoder's trunk
MOBILEFACENET_WHOLE = Layout("MobileFaceNet", "conv1.conv.weight")  # the face-recognition network, embedding included


def _mobilefacenet(code_dim: int, in_channels: int, init: str, maxpool: bool) -> MobileFaceNetEncoder:
    encoder = MobileFaceNetEncoder(code_dim, in_channels)
    if init == "imagenet":
        raise InitError("model.init=imagenet: there are no ImageNet weights for MobileFaceNet; give the path of a "
                        "face-recognition checkpoint (--init PATH) or use --init random")
    if init != "random":
        load_trunk(encoder, read_state_dict(Path(init).expanduser()), init, MOBILEFACENET)
    return encoder


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(Encoder, Encoder.feature_channels, 1.0, "whiten", "any square size, per-image whitening (the paper)"),
    "mobilefacenet": Backbone(_mobilefacenet, MobileFaceNetEncoder.feature_channels, 96 / 112, "centred",
                              "RGB 112x96, (pixel - 127.5) / 128"),
}
