"""CPU training step of one encoder: PyTorch's convolutions, the small-map matmul weight gradient
everywhere it applies, and the per-convolution choice that training uses (the faster of the two,
measured on this machine).

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

from dicefer.models import cpu_conv
from dicefer.models.cpu_conv import machine_signature, use_small_map_convs
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="32,48,64,112")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round (after one warm-up)")
    args = parser.parse_args()
    lines = [f"## CPU training step: PyTorch convolutions, small-map matmul, measured choice ({time.strftime('%Y-%m-%d')})", "",
             (f"{machine_signature()}, {os.cpu_count()} cores; one encoder, batch 64 grayscale, forward + backward "
              f"+ fused Adam; medians of {args.rounds} interleaved rounds x {args.steps} steps."), "",
             "| input | PyTorch (ms/step) | matmul everywhere (ms/step) | measured choice (ms/step) | choice vs PyTorch |",
             "|---|---|---|---|---|"]
    measured = cpu_conv.matmul_is_faster
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(0)
        nets = {"pytorch": Encoder(64, 1), "matmul": use_small_map_convs(Encoder(64, 1)),
                "choice": use_small_map_convs(Encoder(64, 1))}
        opts = {k: adam(n.parameters(), lr=1e-4) for k, n in nets.items()}
        x = torch.randn(64, 1, size, size)
        rounds = {k: [] for k in nets}
        for i in range(args.rounds + 1):
            for k, net in nets.items():
                cpu_conv.matmul_is_faster = (lambda *a: True) if k == "matmul" else measured
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
