"""Training throughput of each backbone at the input the CPU presets use: ResNet-18 at 48x48
(`real-cpu`) against MobileFaceNet at 56x48 (`face-cpu`), Stage 1 steps and baseline steps, in
images/s, one thread, on this CPU, in one process with the cases interleaved round by round.

Each case builds its modules with the project's own builders (models/build.py, the Stage 1 step of
training/stages/, the fused Adam and the CPU's small-map convolutions) and times full steps
(forward, backward, optimiser) on random faces of the preset's shape; medians over rounds. Not a
test: it prints a table and writes its block of docs/benchmarks.md.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/backbone_throughput.py [--rounds 7] [--steps 4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from demo_benchmark import precision_name, stage_steps, write_block

from dicefer.config import build_config
from dicefer.models.cpu_layers import machine_signature
from dicefer.training.accelerator import Accelerator

CASES = {  # label: (preset, overrides)
    "ResNet-18, 48x48 (real-cpu)": ("real-cpu", []),
    "MobileFaceNet, 56x48 (face-cpu)": ("face-cpu", []),
}


def case_steps(preset: str, overrides: list[str], precision: str):
    """(Stage 1 step, baseline step) of one backbone, images per step, and its accelerator."""
    cfg = build_config(preset, None, [*overrides, f"precision={precision}"])
    accel = Accelerator(torch.device("cpu"), False, cfg.precision)
    steps, images = stage_steps(cfg, accel)
    return {"Stage 1": steps["stage1"], "baseline": steps["supervised"]}, images, accel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4, help="steps timed together in one round of one case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = {}
    for label, (preset, overrides) in CASES.items():
        for precision in ("fp32", "bf16"):
            steps, images, accel = case_steps(preset, overrides, precision)
            if precision == "bf16" and not accel.bf16:
                continue
            for stage, step in steps.items():
                cases[label, precision_name("cpu", precision), stage] = (step, images)
    for step, _ in cases.values():  # warm-up: the small-map convolution choice is measured on first use
        step()
        step()
    times = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, (step, images) in cases.items():  # interleaved: a slow spell of the machine hits every case
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[key].append(images * args.steps / (time.perf_counter() - start))
    reference = {stage: statistics.median(times[key]) for key in times for stage in [key[2]]
                 if key[0].startswith("ResNet-18") and key[1] == precision_name("cpu", "fp32")}
    cpu = machine_signature().split("|")[0]
    lines = ["## Backbone throughput on a CPU: ResNet-18 at 48x48 against MobileFaceNet at 56x48", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, 1 thread, torch {torch.__version__}; full training steps "
             f"(forward, backward, Adam) on random faces, batch 32 pairs (64 images), {args.rounds} rounds of "
             f"{args.steps} steps, cases interleaved, medians. Produced by `benchmarks/backbone_throughput.py`.", "",
             "| backbone and input | precision | step | images/s | against ResNet-18 fp32, same step |", "|---|---|---|---|---|"]
    for (label, precision, stage), speeds in times.items():
        median = statistics.median(speeds)
        lines.append(f"| {label} | {precision} | {stage} | {median:.1f} | {median / reference[stage]:.2f} |")
    write_block("backbone-throughput", lines)


if __name__ == "__main__":
    main()
