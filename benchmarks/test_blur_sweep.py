"""Accuracy of trained runs against `data.test_blur`, on each run's evaluated split.

For runs whose training faces are blurrier than the evaluated ones (FER2013's train/ here): how
much matching the blur matters, and whether the label-free estimate of `blur_gap` lands where
the labels say. The runs are not changed (`dicefer evaluate --test-blur` would change them).
Writes its block of docs/benchmarks.md.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/test_blur_sweep.py RUN [RUN ...] [--sigmas 0,1,2,2.5,3,3.5,4]
        [--names supervised,dicefer] [--label fer2013-blur-sweep]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from demo_benchmark import write_block
from sklearn.metrics import f1_score

from dicefer.checkpoint import LoadedRun
from dicefer.data.sharpness import blur_gap
from dicefer.data.torch_datasets import Faces, resize_all
from dicefer.data.transforms import Preprocess
from dicefer.datasets import load_dataset
from dicefer.engine import encode


def scores(run: LoadedRun, images: torch.Tensor, labels: np.ndarray, sigma: float) -> tuple[float, float]:
    """(accuracy, macro-F1) of the run on the evaluated faces blurred by `sigma`."""
    whiten = run.config.data.whiten
    codes = encode(run["expression"], Faces(images, labels, Preprocess("none", 0, whiten, sigma)))
    with torch.no_grad():
        predicted = run["classifier"](torch.from_numpy(codes)).argmax(1).numpy()
    return float((predicted == labels).mean()), float(f1_score(labels, predicted, average="macro"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--sigmas", default="0,1,2,2.5,3,3.5,4", help="comma-separated test_blur values (pixels)")
    parser.add_argument("--names", help="comma-separated names of the runs in the table (default: folder names)")
    parser.add_argument("--label", default="test-blur-sweep", help="name of this block in docs/benchmarks.md")
    args = parser.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    names = args.names.split(",") if args.names else [r.name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(names)} names for {len(args.runs)} runs")

    rows, gaps, spec = [], set(), None
    for name, run_dir in zip(names, args.runs, strict=True):
        run = LoadedRun(run_dir)
        cfg = run.config
        spec = cfg.data.spec
        train, test = load_dataset(cfg, progress=False)
        gaps.add(blur_gap(train.images, test.images))
        images = resize_all(test, cfg.data.size, cfg.data.grayscale)
        results = [scores(run, images, test.expression, s) for s in sigmas]
        for s, (acc, f1) in zip(sigmas, results, strict=True):
            print(f"{name}: test_blur {s:g}: accuracy {acc:.4f}, macro-F1 {f1:.4f}", flush=True)
        rows.append(f"| {name} (trained with `data.test_blur={cfg.data.test_blur:g}`) | "
                    + " | ".join(f"{acc:.3f} / {f1:.3f}" for acc, f1 in results) + " |")

    lines = [
        f"## Accuracy against `data.test_blur` ({spec}, evaluated split)",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, CPU, "
         f"by `benchmarks/test_blur_sweep.py`. Accuracy / macro-F1 with the evaluated faces blurred by each sigma "
         f"(pixels); the training faces are not blurred. `blur_gap`'s label-free estimate for these splits: "
         f"{', '.join(f'{g:g}' for g in sorted(gaps))} px."),
        "",
        "| run | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |",
        "|---|" + "---|" * len(sigmas),
        *rows,
    ]
    write_block(args.label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
