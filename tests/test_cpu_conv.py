"""The small-map convolution gives PyTorch's gradients, only on the maps it is meant for, and only
where this machine measured it faster; the measurement is stored and leaves training's randomness alone."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dicefer.models import cpu_conv
from dicefer.models.cpu_conv import SmallMapConv2d, _SmallMapConv, use_small_map_convs
from dicefer.models.encoders import Encoder


@pytest.mark.parametrize("size,stride", [(1, 1), (2, 1), (4, 2), (3, 1)])
def test_gradients_match_pytorch_conv(size, stride):
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 6, 3, stride=stride, padding=1, bias=False).double()
    fast = use_small_map_convs(nn.Sequential(nn.Conv2d(8, 6, 3, stride=stride, padding=1, bias=False)))[0].double()
    fast.weight.data.copy_(ref.weight.data)
    assert isinstance(fast, SmallMapConv2d)
    x = torch.randn(5, 8, size, size, dtype=torch.double, requires_grad=True)
    w = ref.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _SmallMapConv.apply(a, b, (stride, stride), (1, 1)), (x, w))
    grad_out = torch.randn_like(ref(x))
    gx_ref, gw_ref = torch.autograd.grad(ref(x), (x, ref.weight), grad_out)
    gx, gw = torch.autograd.grad(fast(x), (x, fast.weight), grad_out)
    assert torch.allclose(gx, gx_ref) and torch.allclose(gw, gw_ref)


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    """An empty store of choices, in memory and on disk."""
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_conv, "_choices", {})
    return tmp_path


@pytest.fixture
def matmul_everywhere(monkeypatch):
    monkeypatch.setattr(cpu_conv, "matmul_is_faster", lambda *a: True)


def test_encoder_swaps_every_conv_and_keeps_its_state_dict(matmul_everywhere):
    torch.manual_seed(0)
    plain = Encoder(16, 1)
    fast = use_small_map_convs(Encoder(16, 1))
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(m, SmallMapConv2d) for m in fast.modules()) == 20  # every conv of ResNet-18
    x = torch.randn(4, 1, 32, 32)
    for net in (plain, fast):
        net.train()
        code, local = net(x)
        (code.square().mean() + local.mean()).backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), name


def test_large_maps_and_no_grad_take_pytorchs_own_path(monkeypatch, matmul_everywhere):
    calls = []
    monkeypatch.setattr(cpu_conv._SmallMapConv, "apply", lambda *a: calls.append(a) or nn.functional.conv2d(a[0], a[1], None, a[2], a[3]))
    conv = use_small_map_convs(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    conv(torch.randn(1, 2, 8, 8))          # 64 output positions: PyTorch's conv
    with torch.no_grad():
        conv(torch.randn(1, 2, 2, 2))      # no gradient wanted: PyTorch's conv
    assert calls == []
    conv(torch.randn(1, 2, 4, 4))          # 16 positions, training: the matmul path
    assert len(calls) == 1


def test_a_slower_matmul_is_not_used(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_conv, "matmul_is_faster", lambda *a: False)
    monkeypatch.setattr(cpu_conv._SmallMapConv, "apply", lambda *a: calls.append(a))
    conv = use_small_map_convs(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    conv(torch.randn(1, 2, 2, 2))
    assert calls == []


def test_choice_is_measured_once_stored_and_leaves_the_random_stream_alone(fresh_store, monkeypatch):
    measured = []
    real = cpu_conv._measure
    monkeypatch.setattr(cpu_conv, "_measure", lambda *a: measured.append(a) or real(*a, rounds=1))
    conv = use_small_map_convs(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False)))[0]
    x = torch.randn(4, 8, 2, 2)
    torch.manual_seed(1)
    conv(x).sum().backward()
    after_first = torch.rand(3)
    torch.manual_seed(1)
    conv(x).sum().backward()
    assert torch.equal(torch.rand(3), after_first)  # measuring drew nothing from the global generator
    assert len(measured) == 1
    [store] = fresh_store.glob("conv_paths-*.json")
    [(key, choice)] = json.loads(store.read_text()).items()
    assert key.startswith("(4, 8, 2, 2)|(8, 8, 3, 3)") and isinstance(choice, bool)
    # another process on this machine reads the stored choice instead of measuring again
    code = ("from dicefer.models import cpu_conv; cpu_conv._measure = None; "
            "print(cpu_conv.matmul_is_faster((4, 8, 2, 2), (8, 8, 3, 3), (1, 1), (1, 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DICEFER_CACHE": str(fresh_store)}).stdout
    assert out.strip() == str(choice)


def test_under_bf16_autocast_the_matmul_path_gives_autocasts_gradients(matmul_everywhere):
    """Under autocast the small-map path computes in bf16, as autocast's convolution does: the same
    output and gradients to bf16 rounding, a gradient of the fp32 weight's own type."""
    torch.manual_seed(0)
    ref = nn.Conv2d(64, 32, 3, padding=1, bias=False)
    fast = use_small_map_convs(nn.Sequential(nn.Conv2d(64, 32, 3, padding=1, bias=False)))[0]
    fast.weight.data.copy_(ref.weight.data)
    x = torch.randn(16, 64, 2, 2)
    grads = []
    for conv in (ref, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append(conv.weight.grad)
    assert grads[1].dtype == torch.float32
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=0.05 * grads[0].abs().max().item())


def test_under_autocast_the_old_path_can_be_kept(monkeypatch, matmul_everywhere):
    calls = []
    monkeypatch.setattr(cpu_conv._SmallMapConv, "apply", lambda *a: calls.append(a) or nn.functional.conv2d(a[0], a[1], None, a[2], a[3]))
    conv = use_small_map_convs(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(torch.randn(1, 2, 2, 2))
        assert len(calls) == 1 and calls[0][0].dtype == calls[0][1].dtype == torch.bfloat16
        conv.under_autocast = False
        conv(torch.randn(1, 2, 2, 2))
    assert len(calls) == 1
