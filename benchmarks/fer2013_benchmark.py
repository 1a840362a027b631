"""DICE-FER against the supervised baseline on FER2013 (train on train/, evaluate on val/).

Runs the methods side by side, one process and one thread each, so that they share the machine
and the wall clock alike: the supervised baseline, DICE-FER as the paper describes it, DICE-FER
with the cross-entropy term in Stage 1 (`stage1.ce_weight`), and that plus fine-tuning E with the
classifier after Stage 3 (`stage3.finetune_epochs`). Every run starts from the `demo-paper` preset
(the paper's objectives), so a variant differs only by what it sets. Same backbone, random
initialisation and input size; the baseline gets as many epochs as the longest DICE-FER variant
puts through its encoders.
Writes its block of docs/benchmarks.md. Not part of CI; skips (exit 0) when the data is absent.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fer2013_benchmark.py [--data ../shared/data/fer2013]
        [--stage1-epochs 1] [--stage2-epochs 1] [--finetune-epochs 1] [--variants supervised,finetune]
        [--set KEY=VALUE ...] [--label fer2013]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from demo_benchmark import precision_name, write_block

from dicefer.models.cpu_conv import machine_signature

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = 0.659  # quoted, not measured here: the `fer` package's FER2013 model on a FER2013 test split
VARIANTS = {  # --variants key: (name in the table, overrides)
    "supervised": ("supervised", ["method=supervised"]),
    "paper": ("dicefer (paper recipe)", ["method=dicefer"]),
    "ce": ("dicefer + Stage 1 cross-entropy", ["method=dicefer", "stage1.ce_weight=1.0"]),
    "finetune": ("dicefer + Stage 1 cross-entropy + fine-tuning", ["method=dicefer", "stage1.ce_weight=1.0"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013")
    parser.add_argument("--stage1-epochs", type=int, default=1)
    parser.add_argument("--stage2-epochs", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="for the finetune variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fer2013-benchmark")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every method (repeatable)")
    parser.add_argument("--label", default="fer2013", help="name of this block in docs/benchmarks.md")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        print(f"FER2013 not found at {args.data} (expected train/<class>/*.jpg): skipping", file=sys.stderr)
        return 0

    common = [f"data.spec=fer2013:{args.data}", "data.size=48", "data.eval_split=val", "threads=1",
              f"seed={args.seed}", "stage1.lr=1e-3", "stage2.lr=1e-3", "supervised.lr=1e-3",
              f"stage1.epochs={args.stage1_epochs}", f"stage2.epochs={args.stage2_epochs}", *args.overrides]
    chosen = args.variants.split(",")
    if unknown := set(chosen) - set(VARIANTS):
        parser.error(f"unknown variants {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    finetune = args.finetune_epochs if "finetune" in chosen else 0
    variants = {VARIANTS[k][0]: VARIANTS[k][1] + [f"stage3.finetune_epochs={args.finetune_epochs}"] * (k == "finetune")
                + [f"supervised.epochs={args.stage1_epochs + args.stage2_epochs + finetune}"] * (k == "supervised")
                for k in chosen}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = {VARIANTS[k][0]: args.out / f"{stamp}-{k}" for k in chosen}  # named by variant: parallel invocations do not collide
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    procs = {name: subprocess.Popen([sys.executable, "-m", "dicefer", "train", "--quiet", "--preset", "demo-paper",
                                     "--out", str(runs[name]),
                                     "--set", *common, *overrides], env=env)
             for name, overrides in variants.items()}
    wall = {}
    for name, proc in procs.items():
        if proc.wait():
            print(f"{name} failed (exit {proc.returncode}); its run folder: {runs[name]}", file=sys.stderr)
            return 1
        wall[name] = time.perf_counter() - start
    reports = {name: json.loads((run / "report" / "report.json").read_text()) for name, run in runs.items()}
    write_doc(args, common, reports, wall, runs, finetune)
    return 0


def write_doc(args, common: list[str], reports: dict, wall: dict, runs: dict, finetune: int) -> None:
    classes = next(iter(reports.values()))["classes"]
    cfg = yaml.safe_load((next(iter(runs.values())) / "config.yaml").read_text())
    size = cfg["data"]["size"]
    lines = [
        f"## FER2013 (train/ -> val/), {size}x{size} grayscale, random initialisation (seed {args.seed})",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {_machine(cfg)}; "
        f"the {len(reports)} runs side by side, so throughput is per process on a shared machine. "
        f"Stage 1 {args.stage1_epochs} epoch(s), Stage 2 {args.stage2_epochs}, fine-tuning {finetune} (where used), "
        f"supervised {args.stage1_epochs + args.stage2_epochs + finetune} (the images the longest DICE-FER variant "
        "puts through its encoders). "
        f"Settings: {' '.join(f'`{c}`' for c in common[3:])}. Produced by `benchmarks/fer2013_benchmark.py`."),
        "",
        f"| method | val accuracy | macro-F1 | train accuracy | wall time (s) | vs the `fer` package's {REFERENCE:.1%} (quoted, a test split) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        lines.append(f"| {name} | {r['test']['accuracy']:.3f} | {r['test']['macro_f1']:.3f} | {r['train']['accuracy']:.3f} | "
                     f"{wall[name]:.0f} | {r['test']['accuracy'] - REFERENCE:+.3f} |")
    lines += ["", "Per-class recall on val:", "",
              "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, r in reports.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['test']['per_class'][c]['recall']:.2f}" for c in classes) + " |")
    lines += ["", "Images/s of each stage (median over epochs) and Stage 1's collapse diagnostics, per epoch:", ""]
    for name, r in reports.items():
        run = r["run"]
        speeds = ", ".join(f"{k.removesuffix('_images_per_s')} {v:.1f}" for k, v in run.items() if k.endswith("_images_per_s"))
        lines.append(f"- {name}: {speeds} images/s.")
        for row in _stage1_rows(runs[name]):
            lines.append(f"  - Stage 1 epoch {row['epoch']}: MI {row['mi_global']:.3f} global / {row['mi_local']:.3f} local nats, "
                         f"code spread {row['code_std']:.3f}, L1 pair {row['l1_pair']:.3f} / non-pair {row['l1_nonpair']:.3f}")
    write_block(args.label, lines)


def _machine(cfg: dict) -> str:
    """Where the runs trained (from a run's saved config): the GPU's name, or the CPU with its cores and threads."""
    if cfg["device"] == "cuda":
        return f"one {torch.cuda.get_device_name()} (torch {torch.__version__}, {precision_name('cuda', cfg['precision'])})"
    threads = f"{cfg['threads']} thread(s) each" if cfg["threads"] else "PyTorch's default threads"
    cpu = machine_signature().split("|")[0]
    return f"{cpu} ({os.cpu_count()} cores), CPU only, {threads}, {precision_name('cpu', cfg['precision'])}"


def _stage1_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["stage"] == "stage1"]


if __name__ == "__main__":
    sys.exit(main())
