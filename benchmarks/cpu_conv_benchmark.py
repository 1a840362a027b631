"""CPU training step of one encoder in fp32: PyTorch's layers, the per-convolution choice between
PyTorch's convolution and the small-map matmul weight gradient (dicefer until 2026-12-06), and
the choice among all paths with the channels_last max pool that training uses (models/cpu_layers.py).

One step = forward, backward and Adam on a batch of 64 grayscale faces (a Stage 1 batch of 32
pairs), at the input sizes of the presets. The variants alternate within every round and
the figures are medians over rounds, so a busy machine slows all alike.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_conv_benchmark.py [--rounds 5] [--steps 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from demo_benchmark import write_block

from dicefer.models.cpu_layers import ChannelsLastMaxPool2d, SmallMapConv2d, machine_signature, use_fast_cpu_layers
from dicefer.models.encoders import Encoder
from dicefer.training.accelerator import adam


def step_time(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, steps: int) -> float:
    """Median seconds of one training step."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        code, local = net(x)
        (code.square().mean() + local.mean()).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_grad_only(net: torch.nn.Module) -> torch.nn.Module:
    """The fast layers as they were until 2026-12-06: PyTorch's max pool, no im2col path."""
    for layer in net.modules():
        if isinstance(layer, SmallMapConv2d):
            layer.allowed = ("conv", "matmul_grad")
        elif isinstance(layer, ChannelsLastMaxPool2d):
            layer.channels_last = False
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="32,48,64,112")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round (after one warm-up)")
    args = parser.parse_args()
    lines = [f"## CPU training step, fp32: PyTorch's layers, the measured choices ({time.strftime('%Y-%m-%d')})", "",
             (f"{machine_signature()}, {os.cpu_count()} cores; one encoder, batch 64 grayscale, forward + backward "
              f"+ fused Adam; medians of {args.rounds} interleaved rounds x {args.steps} steps."), "",
             "| input | PyTorch (ms/step) | until 2026-12-06 (ms/step) | today (ms/step) | today vs PyTorch |",
             "|---|---|---|---|---|"]
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(0)
        nets = {"pytorch": Encoder(64, 1), "matmul_grad": matmul_grad_only(use_fast_cpu_layers(Encoder(64, 1))),
                "today": use_fast_cpu_layers(Encoder(64, 1))}
        opts = {k: adam(n.parameters(), lr=1e-4) for k, n in nets.items()}
        x = torch.randn(64, 1, size, size)
        rounds = {k: [] for k in nets}
        for i in range(args.rounds + 1):
            for k, net in nets.items():
                t = step_time(net, opts[k], x, 1 if i == 0 else args.steps)  # round 0 warms up (and measures)
                if i:
                    rounds[k].append(t)
        a, b, c = (statistics.median(rounds[k]) for k in nets)
        lines.append(f"| {size}x{size} | {a * 1e3:.0f} | {b * 1e3:.0f} | {c * 1e3:.0f} | {a / c:.2f}x |")
        print(lines[-1], flush=True)
    lines += ["", f"`python benchmarks/cpu_conv_benchmark.py`; load average at the end: {os.getloadavg()[0]:.2f}."]
    write_block("cpu-conv", lines)


if __name__ == "__main__":
    main()
