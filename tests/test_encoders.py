"""The encoder's stem option: the max-pool dropped doubles the resolution every block sees."""
import torch
from torch import nn

from dicefer.config import TrainConfig
from dicefer.models.build import run_modules
from dicefer.models.encoders import Encoder


def test_without_maxpool_local_features_have_twice_the_resolution():
    x = torch.randn(2, 1, 48, 48)
    code, local = Encoder(16, 1).eval()(x)
    code_np, local_np = Encoder(16, 1, maxpool=False).eval()(x)
    assert code.shape == code_np.shape == (2, 16)
    assert local.shape[-2:] == (3, 3) and local_np.shape[-2:] == (6, 6)


def test_saved_runs_rebuild_the_stem_they_were_trained_with():
    cfg = TrainConfig()
    cfg.model.maxpool = False
    modules = run_modules(cfg, ["expression", "identity"])
    for encoder in modules.values():
        assert not any(isinstance(m, nn.MaxPool2d) for m in encoder.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in run_modules(TrainConfig(), ["expression"])["expression"].modules())
    # the weights are the same tensors either way, so a run's safetensors load into both
    assert Encoder(16, 1).state_dict().keys() == Encoder(16, 1, maxpool=False).state_dict().keys()
