"""How much of the spread between seeds is the benchmark's faces and how much the model's.

`--seed` draws both the synthetic faces and the model's initialisation and data order. This script
trains both methods on each faces seed D with model seeds M = D, D + 10, D + 20, ... (`--seed M
data.synthetic_seed=D`), so runs on one set of faces differ only in the model's seed, and the first
is the plain `--seed D` run; then it writes a table of every run and, per set of faces, the paired
difference DICE-FER minus baseline, to docs/benchmarks.md.

    python benchmarks/seed_spread.py --data-seeds 2 3 [--models 4] [--preset demo]
        [--runs runs/seed-spread] [--jobs 2] [--label NAME]

Runs go to RUNS/{method}-d{D}-m{M} with one thread each, `--jobs` side by side; finished runs
(report.json present) are read, not retrained, so the script can be stopped and run again. Over
every (D, M) pair it also gives the mean paired difference with a 95 % t-interval, and plots each
run's accuracy and identity on E to docs/seed-spread-{label or preset}.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt
from demo_benchmark import ROOT, write_block
from scipy import stats

from dicefer.evaluation.report import evaluated_split
from dicefer.models.cpu_layers import machine_signature

METHODS = ("supervised", "dicefer")


def model_seeds(d: int, models: int) -> list[int]:
    return [d + 10 * k for k in range(models)]


def run_all(args) -> dict[tuple[str, int, int], dict]:
    """Train what is missing, `--jobs` processes at a time, and return every run's report."""
    runs = {(m, d, s): args.runs / f"{m}-d{d}-m{s}"
            for d in args.data_seeds for s in model_seeds(d, args.models) for m in METHODS}
    todo = [key for key, out in runs.items() if not (out / "report" / "report.json").exists()]
    active: list[tuple[tuple, subprocess.Popen]] = []  # logs: RUNS/{name}.log
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while todo or active:
        while todo and len(active) < args.jobs:
            method, d, s = todo.pop(0)
            out = runs[(method, d, s)]
            cmd = [sys.executable, "-m", "dicefer", "train", "--preset", args.preset, "--method", method, "--seed", str(s),
                   "--out", str(out), "--overwrite", "--quiet", f"data.synthetic_seed={d}", "threads=1"]
            print(f"{time.strftime('%H:%M:%S')} start {out.name}", file=sys.stderr)
            with open(out.with_suffix(".log"), "w") as log:  # the child keeps its own handle
                active.append(((method, d, s), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(5)
        for item in [a for a in active if a[1].poll() is not None]:
            active.remove(item)
            if item[1].returncode:
                sys.exit(f"{runs[item[0]].name} failed (exit {item[1].returncode}); see {runs[item[0]].with_suffix('.log')}")
            print(f"{time.strftime('%H:%M:%S')} done {runs[item[0]].name}", file=sys.stderr)
    return {key: json.loads((out / "report" / "report.json").read_text()) for key, out in runs.items()}


def write_doc(args, reports: dict) -> None:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    lines = [
        f"## Synthetic benchmark, `{args.preset}` preset: faces seed against model seed",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {machine_signature().replace('|', ', ')}, CPU only, one thread per run, "
         f"{args.jobs} runs side by side. Each row is `dicefer train --preset {args.preset} --seed M data.synthetic_seed=D`: "
         "rows of one faces seed D share their faces and differ only in the model's initialisation and data order. "
         "Produced by `benchmarks/seed_spread.py`."),
        "",
        ("| faces seed D | model seed M | baseline: test accuracy | identity on its code | DICE-FER: test accuracy | "
         "identity on E | on whitened E | on the predictions alone | on I | DICE-FER - baseline |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in args.data_seeds:
        for s in model_seeds(d, args.models):
            b, f = reports[("supervised", d, s)], reports[("dicefer", d, s)]
            bd, fd = b["disentanglement"], f["disentanglement"]
            lines.append(f"| {d} | {s} | {accuracy(b):.3f} | {fmt(bd['identity_probe_accuracy_E'])} | "
                         f"{accuracy(f):.3f} | {fmt(fd['identity_probe_accuracy_E'])} | "
                         f"{fmt(fd['identity_probe_whitened_E'])} | {fmt(fd['identity_probe_predictions'])} | "
                         f"{fmt(fd['identity_probe_accuracy_I'])} | {accuracy(f) - accuracy(b):+.3f} |")
    lines += ["", "Per set of faces, over its model seeds (mean, and min to max):", "",
              "| faces seed D | baseline: test accuracy | DICE-FER: test accuracy | DICE-FER - baseline | identity on E |",
              "|---|---|---|---|---|"]
    for d in args.data_seeds:
        seeds = model_seeds(d, args.models)
        acc = {m: [accuracy(reports[(m, d, s)]) for s in seeds] for m in METHODS}
        gap = [f - b for f, b in zip(acc["dicefer"], acc["supervised"])]
        ident = [reports[("dicefer", d, s)]["disentanglement"]["identity_probe_accuracy_E"] for s in seeds]
        spread = lambda v, sign="": f"{statistics.mean(v):{sign}.3f} ({min(v):{sign}.3f} to {max(v):{sign}.3f})"
        lines.append(f"| {d} | {spread(acc['supervised'])} | {spread(acc['dicefer'])} | {spread(gap, '+')} | "
                     f"{spread(ident) if None not in ident else 'n/a'} |")
    gaps = [accuracy(reports[("dicefer", d, s)]) - accuracy(reports[("supervised", d, s)])
            for d in args.data_seeds for s in model_seeds(d, args.models)]
    lines += ["", paired_summary(gaps)]
    figure = plot_spread(args, reports)
    lines += ["", f"![Each run's test accuracy and identity on E]({figure.relative_to(ROOT / 'docs')})"]
    write_block(f"seed-spread-{args.label or args.preset}", lines)


def accuracy(report: dict) -> float:
    return report[evaluated_split(report)]["accuracy"]


def paired_summary(gaps: list[float]) -> str:
    """Mean paired difference over every run pair, with a 95 % t-interval (pairs taken as independent)."""
    mean = statistics.mean(gaps)
    if len(gaps) < 2:
        return f"One pair: DICE-FER - baseline = {mean:+.3f}."
    half = stats.t.ppf(0.975, len(gaps) - 1) * statistics.stdev(gaps) / len(gaps) ** 0.5
    wins = sum(g > 0 for g in gaps)
    return (f"Over all {len(gaps)} pairs: DICE-FER - baseline = {mean:+.3f} on average, 95 % t-interval "
            f"{mean - half:+.3f} to {mean + half:+.3f}; DICE-FER ahead in {wins} of {len(gaps)}.")


def plot_spread(args, reports: dict) -> Path:
    """Per faces seed: each model seed's accuracy for both methods (joined by pair), then identity on the codes."""
    chance = next(iter(reports.values()))["disentanglement"]["chance_identity"]
    fig, axes = plt.subplots(2, len(args.data_seeds), figsize=(3.2 * len(args.data_seeds), 5.6), sharey="row",
                             squeeze=False)
    colours = {"supervised": "tab:gray", "dicefer": "tab:blue"}
    for col, d in enumerate(args.data_seeds):
        seeds = model_seeds(d, args.models)
        for row, read in enumerate((accuracy,
                                    lambda r: r["disentanglement"]["identity_probe_accuracy_E"])):
            ax = axes[row, col]
            values = {m: [read(reports[(m, d, s)]) for s in seeds] for m in METHODS}
            for x, pair in enumerate(zip(values["supervised"], values["dicefer"])):
                ax.plot([x - 0.1, x + 0.1], pair, color="lightgray", zorder=1)
            for m, offset in (("supervised", -0.1), ("dicefer", 0.1)):
                ax.scatter([x + offset for x in range(len(seeds))], values[m], color=colours[m], zorder=2,
                           label="baseline" if m == "supervised" else "DICE-FER")
            ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
            ax.set_xlabel(f"model seed (faces seed {d})")
            if row == 1 and chance is not None:
                ax.axhline(chance + 0.10, color="tab:red", linestyle="--", linewidth=1, label="chance + 0.10")
        axes[0, col].set_title(f"faces seed {d}")
    axes[0, 0].set_ylabel("test accuracy (unseen identities)")
    axes[1, 0].set_ylabel("identity probe on the code")
    axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    path = ROOT / "docs" / f"seed-spread-{args.label or args.preset}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-seeds", type=int, nargs="+", required=True, help="faces seeds (data.synthetic_seed)")
    parser.add_argument("--models", type=int, default=4, help="model seeds per faces seed D: D, D + 10, D + 20, ...")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "seed-spread", help="where runs go, and are reused from")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--label", help="names its block of docs/benchmarks.md and its figure (default: the preset)")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    write_doc(args, run_all(args))


if __name__ == "__main__":
    main()
