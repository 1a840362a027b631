"""CPU training step of one encoder with PyTorch's convolutions against the small-map weight gradient.

One step = forward, backward and Adam on a batch of 64 grayscale faces (a Stage 1 batch of 32
pairs), at the input sizes of the presets. The two variants alternate within every round and
the figures are medians over rounds, so a busy machine slows both alike.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_conv_benchmark.py [--rounds 5] [--steps 4]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from demo_benchmark import write_block

from dicefer.accelerator import adam
from dicefer.models.cpu_conv import use_small_map_convs
from dicefer.models.encoders import Encoder


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
    lines = [f"## CPU training step, PyTorch convolutions vs small-map weight gradient ({time.strftime('%Y-%m-%d')})", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; one encoder, batch 64 grayscale, forward + backward + fused Adam; "
             f"medians of {args.rounds} interleaved rounds x {args.steps} steps.", "",
             "| input | PyTorch (ms/step) | small-map (ms/step) | speed-up |", "|---|---|---|---|"]
    for size in (int(s) for s in args.sizes.split(",")):
        torch.manual_seed(0)
        nets = {"pytorch": Encoder(64, 1), "small_map": use_small_map_convs(Encoder(64, 1))}
        opts = {k: adam(n.parameters(), lr=1e-4) for k, n in nets.items()}
        x = torch.randn(64, 1, size, size)
        for k in nets:
            step_time(nets[k], opts[k], x, 1)
        rounds = {k: [] for k in nets}
        for _ in range(args.rounds):
            for k in nets:
                rounds[k].append(step_time(nets[k], opts[k], x, args.steps))
        a, b = (statistics.median(rounds[k]) for k in nets)
        lines.append(f"| {size}x{size} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f}x |")
        print(lines[-1], flush=True)
    lines += ["", "`python benchmarks/cpu_conv_benchmark.py`; load average at the end: "
              f"{os.getloadavg()[0]:.2f}."]
    write_block("cpu-conv", lines)


if __name__ == "__main__":
    main()
