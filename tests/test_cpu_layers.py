"""The small-map convolution paths give PyTorch's gradients, only on the maps they are meant for, and
only where this machine measured them faster; the measurement is stored and leaves training's
randomness alone. The channels_last max pool gives PyTorch's output and gradient exactly."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dicefer.models import cpu_layers
from dicefer.models.cpu_layers import (PATHS, ChannelsLastMaxPool2d, SmallMapConv2d, _im2col_conv, _SmallMapConv,
                                       use_fast_cpu_layers)
from dicefer.models.encoders import Encoder

FAST_PATHS = [p for p in PATHS if p != "conv"]


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    """An empty store of choices, in memory and on disk."""
    monkeypatch.setenv("DICEFER_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_layers, "_choices", {})
    return tmp_path


@pytest.fixture
def force(fresh_store, monkeypatch):
    """force(path): every convolution that may take `path` is measured to find it fastest."""
    def chosen(path: str) -> None:
        monkeypatch.setattr(cpu_layers, "_choices", {})
        monkeypatch.setattr(cpu_layers, "_measure", lambda *a, **k: path if path in a[5] else "conv")
    return chosen


@pytest.fixture
def path_calls(monkeypatch):
    """The fast paths' calls, by name; they still compute."""
    calls = {p: [] for p in FAST_PATHS}
    for name in FAST_PATHS:
        real = cpu_layers._PATH_FUNCTIONS[name]
        monkeypatch.setitem(cpu_layers._PATH_FUNCTIONS, name,
                            lambda *a, name=name, real=real: calls[name].append(a) or real(*a))
    return calls


@pytest.mark.parametrize("size,stride", [(1, 1), (2, 1), (4, 2), (3, 1), (3, 2)])
def test_both_paths_pass_gradcheck(size, stride):
    torch.manual_seed(0)
    x = torch.randn(5, 8, size, size, dtype=torch.double, requires_grad=True)
    w = torch.randn(6, 8, 3, 3, dtype=torch.double, requires_grad=True)
    ref = nn.functional.conv2d(x, w, None, stride, 1)
    for fn in (_SmallMapConv.apply, _im2col_conv):
        assert torch.allclose(fn(x, w, (stride, stride), (1, 1)), ref)
        assert torch.autograd.gradcheck(lambda a, b: fn(a, b, (stride, stride), (1, 1)), (x, w))


def test_im2col_handles_rectangular_kernels_and_maps():
    x, w = torch.randn(3, 4, 2, 3, dtype=torch.double), torch.randn(5, 4, 3, 1, dtype=torch.double)
    assert torch.allclose(_im2col_conv(x, w, (1, 1), (1, 0)), nn.functional.conv2d(x, w, None, 1, (1, 0)))


@pytest.mark.parametrize("path", FAST_PATHS)
def test_encoder_swaps_every_conv_and_pool_and_keeps_its_state_dict(force, path_calls, path):
    force(path)
    torch.manual_seed(0)
    plain = Encoder(16, 1).double()
    fast = use_fast_cpu_layers(Encoder(16, 1)).double()
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(m, SmallMapConv2d) for m in fast.modules()) == 20  # every conv of ResNet-18
    assert sum(isinstance(m, ChannelsLastMaxPool2d) for m in fast.modules()) == 1
    x = torch.randn(4, 1, 32, 32, dtype=torch.double)
    for net in (plain, fast):
        net.train()
        code, local = net(x)
        (code.square().mean() + local.mean()).backward()
    assert path_calls[path]  # layer3 and layer4 took it
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("path", FAST_PATHS)
def test_large_maps_and_no_grad_take_pytorchs_own_path(force, path_calls, path):
    force(path)
    conv = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    conv(torch.randn(1, 2, 8, 8))          # 64 output positions: PyTorch's conv
    with torch.no_grad():
        conv(torch.randn(1, 2, 2, 2))      # no gradient wanted: PyTorch's conv
    assert path_calls[path] == []
    conv(torch.randn(1, 2, 4, 4))          # 16 positions, training: the chosen path
    assert len(path_calls[path]) == 1


def test_a_slower_path_is_not_used(force, path_calls):
    force("conv")
    conv = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    conv(torch.randn(1, 2, 2, 2))
    assert not any(path_calls.values())


def test_allowed_narrows_the_paths_measured(fresh_store, monkeypatch):
    offered = []
    monkeypatch.setattr(cpu_layers, "_measure", lambda *a, **k: offered.append(a[5]) or "conv")
    conv = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    conv(torch.randn(1, 2, 2, 2))
    conv.allowed = ("matmul_grad",)
    conv(torch.randn(1, 2, 2, 2))
    assert offered == [("conv", "matmul_grad", "im2col"), ("conv", "matmul_grad")]


def test_choice_is_measured_once_stored_and_leaves_the_random_stream_alone(fresh_store, monkeypatch):
    measured = []
    real = cpu_layers._measure
    monkeypatch.setattr(cpu_layers, "_measure", lambda *a: measured.append(a) or real(*a, rounds=1))
    conv = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False)))[0]
    x = torch.randn(4, 8, 2, 2)
    torch.manual_seed(1)
    conv(x).sum().backward()
    after_first = torch.rand(3)
    torch.manual_seed(1)
    conv(x).sum().backward()
    assert torch.equal(torch.rand(3), after_first)  # measuring drew nothing from the global generator
    assert len(measured) == 1
    [store] = fresh_store.glob("conv_choices-*.json")
    [(key, choice)] = json.loads(store.read_text()).items()
    assert key.startswith("(4, 8, 2, 2)|(8, 8, 3, 3)") and choice in PATHS
    # another process on this machine reads the stored choice instead of measuring again
    code = ("from dicefer.models import cpu_layers; cpu_layers._measure = None; "
            "print(cpu_layers.fastest_path((4, 8, 2, 2), (8, 8, 3, 3), (1, 1), (1, 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DICEFER_CACHE": str(fresh_store)}).stdout
    assert out.strip() == choice


def test_a_stored_value_that_names_no_path_is_measured_again(fresh_store, monkeypatch):
    key = "(4, 8, 2, 2)|(8, 8, 3, 3)|(1, 1)|(1, 1)|torch.float32|conv+matmul_grad+im2col"
    (fresh_store / cpu_layers._store().name).write_text(json.dumps({key: True}))
    monkeypatch.setattr(cpu_layers, "_measure", lambda *a: "im2col")
    assert cpu_layers.fastest_path((4, 8, 2, 2), (8, 8, 3, 3), (1, 1), (1, 1)) == "im2col"


def test_under_torch_compile_pytorchs_convolution_is_traced(force, path_calls, monkeypatch):
    """The choice reads a file and times kernels, which has no place in a compiled graph (traced,
    it gave a ResNet-18 NaN gradients under bf16): the compiler gets PyTorch's convolution."""
    force("im2col")
    chosen = []
    monkeypatch.setattr(cpu_layers, "fastest_path", lambda *a, **k: chosen.append(a) or "im2col")
    torch.manual_seed(0)
    net = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False)))
    x = torch.randn(2, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.compile(net, backend="aot_eager")(x).float().square().sum().backward()
    assert chosen == [] and path_calls["im2col"] == []
    compiled_grad, net[0].weight.grad = net[0].weight.grad, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x).float().square().sum().backward()  # eager: the chosen path
    assert len(chosen) == 1 and len(path_calls["im2col"]) == 1
    assert torch.allclose(compiled_grad, net[0].weight.grad, rtol=0.05, atol=0.05 * compiled_grad.abs().max().item())


@pytest.mark.parametrize("path", FAST_PATHS)
def test_under_bf16_autocast_each_path_gives_autocasts_gradients(force, path_calls, path):
    """Under autocast the small-map paths compute in bf16, as autocast's convolution does: the same
    output and gradients to bf16 rounding, a gradient of the fp32 weight's own type."""
    force(path)
    torch.manual_seed(0)
    ref = nn.Conv2d(64, 32, 3, padding=1, bias=False)
    fast = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(64, 32, 3, padding=1, bias=False)))[0]
    fast.weight.data.copy_(ref.weight.data)
    x = torch.randn(16, 64, 2, 2)
    grads = []
    for conv in (ref, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append(conv.weight.grad)
    assert len(path_calls[path]) == 1 and path_calls[path][0][0].dtype == torch.bfloat16
    assert grads[1].dtype == torch.float32
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=0.05 * grads[0].abs().max().item())


def test_under_autocast_the_old_path_can_be_kept(force, path_calls):
    force("im2col")
    conv = use_fast_cpu_layers(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False)))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(torch.randn(1, 2, 2, 2))
        assert len(path_calls["im2col"]) == 1
        conv.under_autocast = False
        conv(torch.randn(1, 2, 2, 2))
    assert len(path_calls["im2col"]) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_pool_gives_pytorchs_output_and_gradient_exactly(dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 12, 12).relu().round(decimals=1).to(dtype).requires_grad_()  # ties included
    grad_out = torch.randn(4, 8, 6, 6, dtype=dtype)
    outs = []
    for pool in (nn.MaxPool2d(3, 2, 1), use_fast_cpu_layers(nn.Sequential(nn.MaxPool2d(3, 2, 1)))[0]):
        out = pool(x)
        outs.append((out, *torch.autograd.grad(out, x, grad_out)))
    assert isinstance(pool, ChannelsLastMaxPool2d)
    assert outs[1][0].is_contiguous()
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_the_pool_hands_back_a_gradient_in_the_default_layout():
    """A channels_last gradient would slow the backward of the layer before the pool."""
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    pool = use_fast_cpu_layers(nn.Sequential(nn.MaxPool2d(3, 2, 1)))[0]
    [grad] = torch.autograd.grad(pool(x * 2), x, torch.randn(2, 4, 4, 4))
    assert grad.is_contiguous()


@pytest.mark.parametrize("size,stride,kernel,padding", [(2, 1, (3, 3), (1, 1)), (3, 2, (3, 3), (1, 1)),
                                                        (4, 1, (3, 1), (1, 0)), (3, 2, (1, 1), (0, 0))])
def test_unfold_as_a_product_gives_pytorchs_columns_and_gradient(size, stride, kernel, padding):
    x = torch.randn(3, 5, size, size + 1, dtype=torch.double, requires_grad=True)
    ref = nn.functional.unfold(x, kernel, padding=padding, stride=stride)
    ours = cpu_layers._unfold(x, kernel, (stride, stride), padding)
    assert torch.equal(ours, ref)
    grad = torch.randn_like(ref)
    assert torch.allclose(*(torch.autograd.grad(y, x, grad)[0] for y in (ref, ours)))
