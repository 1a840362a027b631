"""Training throughput of every stage, in images/s, on whichever device it runs on.

Trains DICE-FER and the supervised baseline for a few epochs each with the real pipeline (data
loading, augmentation, autocast, DDP when under torchrun) and reports the median images/s over
the epochs after the first (which pays for warm-up and, with --compile, for compiling).

    python benchmarks/stage_throughput.py [--preset demo] [--device auto|cpu|cuda] [--epochs 3]
        [--compile] [--set KEY=VALUE ...]
    torchrun --nproc_per_node 4 benchmarks/stage_throughput.py --device cuda --preset paper

Stage 3 trains on codes, not images: its figure is codes/s.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dicefer.config import TrainConfig, build_config, choices
from dicefer.pipeline import train_and_evaluate
from dicefer.run import read_metrics
from dicefer.training.distributed import resolve_device


def stage_throughput(preset: str, method: str, epochs: int, overrides: list[str]) -> dict[str, float] | None:
    """Median images/s per stage of one short run (None on ranks other than 0)."""
    per_stage = [f"{key}.epochs={epochs}" for key in ("stage1", "stage2", "stage3", "supervised")]
    cfg = build_config(preset, None, [*per_stage, f"method={method}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        if train_and_evaluate(cfg, Path(tmp) / "run", show_progress=False) is None:
            return None
        rows = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    out = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        speeds = [r["images_per_s"] for r in rows if r["stage"] == stage]
        out[stage] = statistics.median(speeds[1:] or speeds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="auto", choices=choices(TrainConfig, "device"))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every stage (the first is not counted)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = [f"device={args.device}", f"compile={str(args.compile).lower()}", *args.overrides]
    results, wall = {}, time.perf_counter()
    for method in ("dicefer", "supervised"):
        speeds = stage_throughput(args.preset, method, args.epochs, overrides)
        if speeds is None:
            return
        results.update(speeds)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    cfg = build_config(args.preset, None, args.overrides)
    print(f"## Stage throughput: {name}, torch {torch.__version__}, {args.preset} preset "
          f"({cfg.data.size}x{cfg.data.size}, batch {cfg.batch_size} pairs), compile {args.compile}, "
          f"{args.epochs} epochs per stage, {time.perf_counter() - wall:.0f} s in all\n")
    print("| stage | images/s | ratio to supervised |\n|---|---|---|")
    for stage, speed in results.items():
        unit = " (codes/s)" if stage == "stage3" else ""
        print(f"| {stage}{unit} | {speed:.1f} | {speed / results['supervised']:.2f} |")


if __name__ == "__main__":
    main()
