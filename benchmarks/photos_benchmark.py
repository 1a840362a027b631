"""End to end on photos: FER2013 val faces as plain photos, through `dicefer predict`.

Each val face is enlarged to 192x192 and centred in a 320x320 mid-grey frame (written under the
run folder, never committed). `dicefer predict` then finds and classifies the faces with the Haar
default and with YuNet (../shared/models/), each with the run's calibrated framing and with the
detector's fixed margin, and once on the 48 px crops themselves (`--detector none`): the model's
own accuracy. A photo whose face is not found counts as wrong. Writes the "photos" block of
docs/benchmarks.md. Not part of CI; skips (exit 0) when the data, the model or the run is absent.

    python benchmarks/photos_benchmark.py --run runs/fer2013-benchmark/RUN [--limit N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from demo_benchmark import ROOT, write_block
from PIL import Image

from dicefer.data.base import canonical_class
from dicefer.inference.framing import CANVAS, FACE_SIDE, in_frame
from dicefer.models.cpu_layers import machine_signature

SHARED = ROOT.parent / "shared"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


def make_photos(val: Path, out: Path, limit: int | None) -> list[Path]:
    """val/<class>/*.jpg -> out/<class>/*.png, each face enlarged and framed as a photo."""
    files = sorted(val.glob("*/*.jpg"))
    files = files[::max(1, len(files) // limit)][:limit] if limit else files
    for f in files:
        target = out / f.parent.name / f"{f.stem}.png"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(in_frame(np.asarray(Image.open(f).convert("L")))).save(target)
    return files


def predict(run: Path, inputs: list[Path], out: Path, *options: str) -> tuple[dict[str, str], float, str]:
    """source -> label of its largest face; seconds taken; predict's framing line."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "dicefer", "predict", "--run", str(run), "--quiet", "--out", str(out),
                           *options, *map(str, inputs)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"dicefer predict {' '.join(options)} failed:\n{done.stderr}")
    largest: dict[str, tuple[int, str]] = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["box"] is None:  # "no face detected"
            continue
        area = r["box"][2] * r["box"][3]
        if r["source"] not in largest or area > largest[r["source"]][0]:
            largest[r["source"]] = (area, r["label"])
    framing = next((line for line in done.stderr.splitlines() if "framed like" in line), "")
    return {s: label for s, (_, label) in largest.items()}, time.time() - started, framing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run folder trained on FER2013 train/")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "fer2013")
    parser.add_argument("--limit", type=int, help="use every k-th val face, about this many (default: all)")
    args = parser.parse_args()
    val = args.data / "val"
    for need, what in ((val, "FER2013 val/"), (YUNET, "the YuNet model"), (args.run / "model.safetensors", "the run")):
        if not need.exists():
            print(f"{what} not found at {need}: skipping", file=sys.stderr)
            return 0
    work = ROOT / "runs" / "photos-benchmark" / args.run.name  # not in the run folder: it holds only what a run writes
    files = make_photos(val, work / "photos", args.limit)
    photos = [work / "photos" / f.parent.name / f"{f.stem}.png" for f in files]
    truth = {str(p): canonical_class(p.parent.name) for p in photos}
    truth |= {str(f): canonical_class(f.parent.name) for f in files}
    yunet = ["--detector", "yunet", "--detector-model", str(YUNET)]
    settings = [
        ("48 px crops, `--detector none` (the model's own accuracy)", files, ["--detector", "none"]),
        ("Haar (default), calibrated framing", photos, ["--detector", "haar"]),
        ("Haar, fixed margin 0.2", photos, ["--detector", "haar", "--margin", "0.2"]),
        ("YuNet, calibrated framing", photos, yunet),
        ("YuNet, fixed margin 0.15", photos, [*yunet, "--margin", "0.15"]),
    ]
    rows = []
    for name, inputs, options in settings:
        labels, seconds, framing = predict(args.run, inputs, work / "predictions.jsonl", *options)
        sources = [str(p) for p in inputs]
        found = sum(s in labels for s in sources) / len(sources)
        accuracy = sum(labels.get(s) == truth[s] for s in sources) / len(sources)
        rows.append((name, found, accuracy, seconds, framing.split(": ", 1)[-1]))
        print(f"{name}: found {found:.1%}, accuracy {accuracy:.3f} ({seconds:.0f} s)", file=sys.stderr)
    own = rows[0][2]
    lines = [
        "## End to end on photos: FER2013 val faces framed as photos, through `dicefer predict`",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {machine_signature().split('|')[0]}, CPU only. {len(files)} val faces, "
         f"each enlarged to {FACE_SIDE}x{FACE_SIDE} (bicubic) and centred in a {CANVAS}x{CANVAS} mid-grey frame; model: "
         f"`{args.run.name}` (trained on FER2013 train/ at 48 px). A photo whose face is not found counts as wrong; "
         "with several boxes, the largest one's label counts. Produced by `benchmarks/photos_benchmark.py`."),
        "",
        "| detector, framing | faces found | accuracy | against the crops (points) | framing used | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, found, accuracy, seconds, framing in rows:
        lines.append(f"| {name} | {found:.1%} | {accuracy:.3f} | {100 * (accuracy - own):+.1f} | {framing or 'n/a'} | {seconds:.0f} |")
    yunet_found, yunet_acc = rows[3][1], rows[3][2]
    lines += ["", (f"Targets (YuNet, calibrated): faces found 95 % or more: {'met' if yunet_found >= 0.95 else 'missed'} "
                   f"({yunet_found:.1%}); accuracy within 3 points of the crops: "
                   f"{'met' if yunet_acc >= own - 0.03 else 'missed'} ({100 * (yunet_acc - own):+.1f} points).")]
    write_block("photos", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
