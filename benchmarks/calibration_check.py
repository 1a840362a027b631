"""Temperature scaling on a real model: a finished run's logits on its evaluated split (FER2013 val
for a FER2013 run), halved at random; the temperature is fitted on one half and the expected
calibration error (15 bins) is measured on the other, before and after, then the halves swap.
The run need not have been trained with a calibration split: nothing here touches its training data.
Writes a block of docs/benchmarks.md and the reliability diagram of the first half.

    OMP_NUM_THREADS=1 python benchmarks/calibration_check.py --run runs/fer2013-benchmark/...-real-cpu-seed0 [--label calibration-fer2013]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from demo_benchmark import ROOT, write_block

from dicefer.data.registry import load_dataset
from dicefer.evaluation.calibration import expected_calibration_error, reliability_figure, softmax
from dicefer.models import build
from dicefer.run import LoadedRun
from dicefer.training.temperature import fit_temperature, logits_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--label", default="calibration-fer2013")
    args = parser.parse_args()
    run = LoadedRun(args.run)
    _, faces = load_dataset(run.config, progress=False)
    logits = logits_of(run["expression"], run["classifier"], faces, build.face_input(run.config))
    labels = faces.expression
    order = np.random.default_rng(0).permutation(len(labels))
    halves = np.array_split(order, 2)
    rows = []
    for fit, score in (halves, halves[::-1]):
        t = fit_temperature(logits[fit], labels[fit])
        rows.append((t, expected_calibration_error(softmax(logits[score]), labels[score]),
                     expected_calibration_error(softmax(logits[score], t), labels[score])))
    figure = ROOT / "docs" / f"{args.label}-reliability.png"
    reliability_figure(logits[halves[1]], labels[halves[1]], rows[0][0], f"{faces.split} (second half)").savefig(
        figure, dpi=110, bbox_inches="tight")
    accuracy = float((logits.argmax(1) == labels).mean())
    lines = [f"## Calibration of a FER2013 model: temperature fitted on one half of {faces.split}, scored on the other", "",
             f"Measured {time.strftime('%Y-%m-%d')}: run `{args.run.name}` ({run.config.method}, {faces.name}, "
             f"{len(labels)} {faces.split} faces, accuracy {accuracy:.3f}, unchanged by the temperature); the "
             f"{faces.split} faces halved at random (seed 0), T fitted on one half (L-BFGS on the negative "
             f"log-likelihood), expected calibration error (15 equal-width bins) on the other, then the halves "
             f"swapped. Produced by `benchmarks/calibration_check.py`.", "",
             "| fitted on | T | ECE before | ECE after |", "|---|---|---|---|"]
    for name, (t, before, after) in zip(("first half", "second half"), rows):
        lines.append(f"| {name} | {t:.3f} | {before:.3f} | {after:.3f} |")
    lines += ["", f"![Reliability before and after]({figure.relative_to(ROOT / 'docs')})"]
    write_block(args.label, lines)


if __name__ == "__main__":
    main()
