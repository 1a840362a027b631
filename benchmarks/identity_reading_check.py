"""Does the identity reading for data without identity labels (identity R^2 through a
face-recognition network) rank codes as the identity probe does where identity labels exist?

On the synthetic benchmark (whose people are known), trains DICE-FER and the supervised baseline
for each seed, reads identity both ways on the unseen test people (the probe on their labels, R^2
through the CASIA-WebFace MobileFaceNet in ../shared/models/), and compares the order the two put
the codes in (DICE-FER's E and I, the baseline's code). Not a test: skips (exit 0) when the network
is absent; writes its block of docs/benchmarks.md.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/identity_reading_check.py [--preset smoke] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from demo_benchmark import ROOT, write_block
from scipy.stats import spearmanr

from dicefer.config import build_config
from dicefer.models.cpu_layers import machine_signature
from dicefer.pipeline import train_and_evaluate

CASIA = ROOT.parent / "shared" / "models" / "mobilefacenet_casia_webface.ckpt"


def readings(preset: str, seed: int) -> dict[str, tuple[float, float]]:
    """{code: (identity probe accuracy, identity R^2)} for DICE-FER's E and I and the baseline's code."""
    out = {}
    for method in ("dicefer", "supervised"):
        cfg = build_config(preset, None, [f"method={method}", f"seed={seed}", f"identity_reference={CASIA}"])
        with tempfile.TemporaryDirectory() as tmp:
            d = train_and_evaluate(cfg, Path(tmp) / "run", show_progress=False)["disentanglement"]
        names = {"E": "DICE-FER E", "I": "DICE-FER I"} if method == "dicefer" else {"E": "baseline code"}
        for code, name in names.items():
            out[name] = (d[f"identity_probe_accuracy_{code}"], d["identity_r2"][code])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    if not CASIA.is_file():
        print(f"{CASIA} is absent: skipping", file=sys.stderr)
        return 0
    start = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, agree = [], []
    for seed in seeds:
        r = readings(args.preset, seed)
        names = list(r)
        rho = spearmanr([r[n][0] for n in names], [r[n][1] for n in names]).statistic
        same = sorted(names, key=lambda n: r[n][0]) == sorted(names, key=lambda n: r[n][1])
        agree.append(same)
        rows += [f"| {seed} | {n} | {r[n][0]:.3f} | {r[n][1]:.3f} |" for n in names]
        rows.append(f"| {seed} | order the same: {'yes' if same else 'no'} (Spearman {rho:+.2f}) | | |")
    lines = ["## Identity R^2 against the identity probe, on the synthetic benchmark", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {machine_signature().split('|')[0]}, `{args.preset}` preset, "
             f"{time.time() - start:.0f} s in all. Per seed: DICE-FER and the baseline trained, then on the unseen test "
             "people the identity probe (linear, on their identity labels) and the identity R^2 (a ridge map from the "
             "code to the CASIA-WebFace MobileFaceNet's embedding, expression removed; README) read each code. "
             "Produced by `benchmarks/identity_reading_check.py`.", "",
             "| seed | code | identity probe accuracy | identity R^2 |", "|---|---|---|---|", *rows, "",
             f"The two readings put the three codes in the same order in {sum(agree)} of {len(agree)} seeds."]
    write_block("identity-reading", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
