"""--init: ResNet-18 state dicts as FER repositories ship them load into the encoders, strictly and
without unpickling objects; ImageNet weights that cannot be downloaded give a clear message."""
import logging
import os
import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models import resnet18

from dicefer.cli import main
from dicefer.errors import UserError
from dicefer.models.encoders import Encoder
from dicefer.models.pretrained import InitError


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    return {k: v.clone() for k, v in resnet18(num_classes=10).state_dict().items()}


def assert_trunk_equal(enc: Encoder, state: dict) -> None:
    assert torch.equal(enc.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(enc.stem[1].running_mean, state["bn1.running_mean"])


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "pth.tar"])
def test_pth_nested_and_prefixed_loads(tmp_path, reference, caplog, wrap):
    state = {f"module.{k}": v for k, v in reference.items()}
    payload = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
               "pth.tar": {"epoch": 30, "arch": "resnet18", "best_prec1": 71.5, "state_dict": state}}[wrap]
    path = tmp_path / ("w.pth.tar" if wrap == "pth.tar" else "w.pth")
    torch.save(payload, path)
    with caplog.at_level(logging.INFO, logger="dicefer"):
        enc = Encoder(64, 3, str(path))
    assert torch.equal(enc.stem[0].weight, reference["conv1.weight"])
    assert_trunk_equal(enc, reference)
    assert "loaded 120 of 120 ResNet-18 tensors; ignored 2 tensors beyond the trunk (fc.)" in caplog.text


def test_safetensors_and_grayscale_adaptation(tmp_path, reference):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    enc = Encoder(64, 1, str(path))
    assert enc.stem[0].weight.shape == (64, 1, 7, 7)
    assert torch.allclose(enc.stem[0].weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert_trunk_equal(enc, reference)
    gray = torch.rand(2, 1, 64, 64)
    rgb_net = Encoder(64, 3, str(path)).eval()
    rgb_net.head = enc.head
    assert torch.allclose(enc.eval()(gray)[0], rgb_net(gray.repeat(1, 3, 1, 1))[0], atol=1e-4)


class Exploit:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, reference):
    Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": reference, "payload": Exploit()}, path)
    with pytest.raises(InitError, match=r"holds Python objects besides tensors \(\w+\.system\), which dicefer never unpickles"):
        Encoder(64, 1, str(path))
    assert not Exploit.marker.exists()


def test_wrong_architecture_or_not_weights_is_an_error(tmp_path, reference):
    missing = {k: v for k, v in reference.items() if not k.startswith("layer4.1.")}
    torch.save(missing, tmp_path / "partial.pth")
    with pytest.raises(InitError, match=r"not a ResNet-18 state dict \(missing 10 tensors: layer4\.1\.conv1\.weight"):
        Encoder(64, 1, str(tmp_path / "partial.pth"))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(InitError, match=r"not a ResNet-18 state dict \(unexpected 96 tensors: layer1\.2\.conv1\.weight"):
        Encoder(64, 1, str(tmp_path / "r34.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(InitError, match="is not a PyTorch or safetensors weights file"):
        Encoder(64, 1, str(tmp_path / "text.pth"))
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(InitError, match="holds no tensors"):
        Encoder(64, 1, str(tmp_path / "empty.pth"))


def test_imagenet_offline_says_so(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="could not download torchvision's ImageNet ResNet-18 weights .*offline: use --init random"):
        Encoder(64, 1, "imagenet")


def test_cli_init_file_that_does_not_exist(capsys, tmp_path):
    assert main(["train", "--preset", "smoke", "--init", str(tmp_path / "none.pth"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither random, imagenet nor an existing weights file" in err[0]
