"""DICE-FER against the supervised baseline on the embedded synthetic benchmark.

Trains both methods with the same preset and seed, then measures training throughput of each
stage with an interleaved micro-benchmark (supervised, Stage 1, Stage 2 steps alternated, median
over rounds, so machine noise hits all three alike), and writes docs/benchmarks.md.

    python benchmarks/demo_benchmark.py [--preset demo] [--rounds 11] [--steps 4]
        [--set KEY=VALUE ...] [--label NAME]

Run it on a quiet machine with OpenMP's wait policy as `dicefer train` has it (unset). Where other
processes share the CPU, OMP_WAIT_POLICY=PASSIVE keeps timings stable, but then every small matrix
product of the MI critics wakes the sleeping thread pool, which costs Stage 1 several ms a step
that training does not pay; the block records which policy was in force.

Each label owns one block of docs/benchmarks.md, replaced on the next run with that label.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from collections.abc import Callable

import numpy as np
import torch

from dicefer.config import build_config
from dicefer.data.base import FaceSet
from dicefer.data.torch_datasets import resize_all
from dicefer.models import build
from dicefer.models.cpu_layers import machine_signature
from dicefer.pipeline import train_and_evaluate
from dicefer.training.accelerator import Accelerator
from dicefer.training.distributed import Process
from dicefer.training.loop import train_one_epoch
from dicefer.training.setup import Setup
from dicefer.training.stages import Stage, Stage1, Stage2, Supervised

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def stage_steps(cfg, accel: Accelerator) -> tuple[dict[str, Callable[[], None]], int]:
    """One full training step (forward, backward, optimisers) of the baseline, Stage 1 and Stage 2,
    each stage built and stepped as training builds and steps it (training/stages/, the loop's
    train_one_epoch), on random faces of the config's input; and the images one step takes."""
    face = build.face_input(cfg)
    b, n = cfg.batch_size, 4 * cfg.batch_size
    pixels = np.random.default_rng(0).integers(0, 256, (n, face.size, face.width, *(() if face.grayscale else (3,))))
    faces = FaceSet(pixels.astype(np.uint8), np.arange(n) % 7, None, "random faces")
    images = resize_all(faces, face)
    setup = lambda: Setup.build(cfg, Process(device=accel.device), accel, faces, face, images)
    with_e = setup()
    Stage1(with_e)  # Stage 2 freezes the E it is given: its own
    stages = {"supervised": Supervised(setup()), "stage1": Stage1(setup()), "stage2": Stage2(with_e)}
    gen = torch.Generator().manual_seed(0)
    x_m, x_n = (torch.randn(b, *face.shape, generator=gen) for _ in range(2))
    y = torch.randint(0, 7, (b,), generator=gen)
    batches = {"supervised": (torch.cat([x_m, x_n]), torch.cat([y, y])), "stage1": (x_m, x_n, y), "stage2": (x_m, x_n, y)}

    def step(stage: Stage, batch: tuple) -> Callable[[], None]:
        return lambda: train_one_epoch(stage.step, stage.optimizers, [batch], stage.name, 0, stage.images, False,
                                       autocast=accel.autocast, move=accel.move)

    return {name: step(stage, batches[name]) for name, stage in stages.items()}, 2 * b


def throughput(cfg, rounds: int, steps: int) -> dict[str, float]:
    """Images/s of one training step of each stage, interleaved, median over rounds."""
    torch.manual_seed(0)
    cpu = Accelerator(torch.device("cpu"), precision=cfg.precision)  # the encoders and precision training uses
    run, images = stage_steps(cfg, cpu)
    times: dict[str, list[float]] = {k: [] for k in run}
    for which in times:  # warm-up
        run[which]()
    for _ in range(rounds):
        for which, seconds in times.items():
            start = time.perf_counter()
            for _ in range(steps):
                run[which]()
            seconds.append((time.perf_counter() - start) / steps)
    return {k: images / statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=4, help="training steps per stage and round of the throughput benchmark")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to both methods (repeatable)")
    parser.add_argument("--label", help="name of this block in docs/benchmarks.md (default: the preset)")
    args = parser.parse_args()
    args.label = args.label or args.preset
    if any(o.startswith("seed=") for o in args.overrides):
        parser.error("set the seed with --seed, not --set seed=... (the block is labelled with --seed)")

    reports, wall = {}, {}
    for method in ("supervised", "dicefer"):
        cfg = build_config(args.preset, None, [*args.overrides, f"method={method}", f"seed={args.seed}"])
        out = args.out / f"{args.preset}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        reports[method] = train_and_evaluate(cfg, out)
        wall[method] = time.perf_counter() - start
        print(f"{method}: {json.dumps(reports[method]['test'] | {'per_class': '...'})}", file=sys.stderr)
    speed = throughput(build_config(args.preset, None, args.overrides), args.rounds, args.steps)
    write_doc(args, reports, wall, speed)


def write_doc(args, reports: dict, wall: dict, speed: dict) -> None:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    cfg = build_config(args.preset, None, args.overrides)
    settings = " ".join(f"`{o}`" for o in args.overrides) or "no overrides"
    lines = [
        f"## Synthetic benchmark, `{args.preset}` preset, {settings} (seed {args.seed})",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {machine_signature().replace('|', ', ')}, CPU only, "
        f"{precision_name('cpu', cfg.precision)}. "
        f"Input {cfg.data.size}x{cfg.data.size} grayscale, {cfg.data.train_identities} training identities "
        f"(confounded with expression), {cfg.data.test_identities} unseen test identities. "
        "Produced by `benchmarks/demo_benchmark.py`."),
        "",
        ("| method | test accuracy (unseen identities) | macro-F1 | train accuracy | MIG | identity probe on E | identity probe on I | "
         "on whitened E | on whitened I | on the predictions alone | chance | wall time (s) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in reports.items():
        d = r["disentanglement"]
        lines.append(f"| {method} | {r['test']['accuracy']:.3f} | {r['test']['macro_f1']:.3f} | {r['train']['accuracy']:.3f} | "
                     f"{fmt(d['mig'])} | {fmt(d['identity_probe_accuracy_E'])} | {fmt(d['identity_probe_accuracy_I'])} | "
                     f"{fmt(d['identity_probe_whitened_E'])} | {fmt(d['identity_probe_whitened_I'])} | "
                     f"{fmt(d['identity_probe_predictions'])} | {fmt(d['chance_identity'])} | {wall[method]:.0f} |")
    run = reports["dicefer"]["run"]
    lines += [
        "",
        ("Identity probes: linear, trained on half of each test identity's images and tested on the other half; each "
         f"reading is the mean of {reports['dicefer']['disentanglement']['identity_probe_fits']} such fits. "
         "'On the predictions alone' reads identity from each image's predicted expression (one-hot): test "
         "identities show every expression alike, so only person-dependent mistakes put identity there, and a "
         "code can hardly read less than the decisions it yields."),
        "",
        "Stage 1 at its last epoch (collapse diagnostics): " + ", ".join(
            f"{k.removeprefix('stage1_final_')} {run[k]:.4g}" for k in run if k.startswith("stage1_final_")) + ".",
        "",
        (f"Training throughput, interleaved micro-benchmark, median of {args.rounds} rounds of {args.steps} steps "
        f"(batch {cfg.batch_size} pairs = {2 * cfg.batch_size} images per step for every stage), "
        f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}:"),
        "",
        "| step | images/s | ratio to supervised |",
        "|---|---|---|",
    ]
    for k, v in speed.items():
        lines.append(f"| {k} | {v:.1f} | {v / speed['supervised']:.2f}x |")
    write_block(args.label, lines)


def precision_name(device: str, precision: str) -> str:
    """What a run with this `precision` setting trained in on `device` here: bf16 autocast or fp32."""
    return "bf16 autocast" if Accelerator(torch.device(device), precision=precision).bf16 else "fp32"


def write_block(label: str, lines: list[str]) -> None:
    """Replace the block of docs/benchmarks.md that `label` owns (or append it), and print it."""
    begin, end = f"<!-- benchmark:{label}:begin -->", f"<!-- benchmark:{label}:end -->"
    block = "\n".join([begin, *lines, end])
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nEvery number here was measured by a script in `benchmarks/`.\n\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
