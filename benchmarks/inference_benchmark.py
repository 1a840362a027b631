"""Inference speed on the CPU: the classifier alone (PyTorch eager and onnxruntime, batch 1 and
64) and `ExpressionRecognizer.predict` end to end on 192x192 photos with Haar detection.

The photos are synthetic faces (96 px renders with pose, lighting and noise) pasted on a noisy
gradient, since no real photos may be committed. The `fer` package's Haar detection alone
(default cascade, scale 1.1, 5 neighbours, faces >= 50 px) is timed beside them as a reference.
Every measurement is interleaved with the others round by round, so machine noise hits all alike,
and the median over rounds is reported.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/inference_benchmark.py [--run DIR] [--rounds 7] [--label inference]

Without --run it trains a few steps of the smoke preset at the demo's input size (48x48): speed
does not depend on the weights. Writes its block of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch
from demo_benchmark import write_block

from dicefer import ExpressionRecognizer
from dicefer.config import PRESETS, build_config
from dicefer.data.synthetic import SyntheticSpec, render_face
from dicefer.inference.backends import OnnxBackend, TorchBackend
from dicefer.inference.dense_convs import densify_small_maps
from dicefer.inference.detectors import HaarDetector
from dicefer.inference.onnx_export import export_onnx
from dicefer.inference.quantize import quantize_int8
from dicefer.pipeline import train_and_evaluate
from dicefer.run import LoadedRun

ONNX_CONVS = "onnxruntime, every convolution a Conv node (as before 2026-11-29)"
TORCH_DENSE = "PyTorch eager, small-map convolutions as matrix products (as the export)"
FER_HAAR = {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (50, 50)}  # fer.FER's defaults


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """RGB 192x192: a face of 96 px at a random place on a noisy gradient of random direction."""
    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(size=96)
    ramp = np.linspace(-40, 40, 192)
    out = []
    for k in range(n):
        background = 120 + rng.uniform(-1, 1) * ramp[None, :] + rng.uniform(-1, 1) * ramp[:, None]
        image = np.clip(background + rng.normal(0, 8, (192, 192)), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, 96, 2)
        image[y:y + 96, x:x + 96] = render_face(spec, int(rng.choice([0, 4, 6])), k % 7, nuisance=True, k=k)
        out.append(np.dstack([image] * 3))
    return out


def classifier_speed(backends: dict, rounds: int) -> dict[tuple[str, int], list[float]]:
    """Faces/s of backend(x) on whitened inputs, per round."""
    spec = next(iter(backends.values())).spec
    inputs = {n: spec.example(n) for n in (1, 64)}
    calls = {1: 40, 64: 3}
    speed: dict[tuple[str, int], list[float]] = {(name, n): [] for name in backends for n in inputs}
    for name, n in speed:  # warm-up
        backends[name](inputs[n])
    for _ in range(rounds):
        for (name, n), per_round in speed.items():
            start = time.perf_counter()
            for _ in range(calls[n]):
                backends[name](inputs[n])
            per_round.append(n * calls[n] / (time.perf_counter() - start))
    return speed


def end_to_end(recognizers: dict[str, ExpressionRecognizer], images: list[np.ndarray], rounds: int) -> dict[str, list[float]]:
    """Median ms per photo of each pipeline, per round; also fer's Haar detection alone."""
    fer_cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    pipelines = {f"predict, {name}": rec.predict for name, rec in recognizers.items()}
    batch = {f"predict_many of all photos, {name}, per photo": rec.predict_many for name, rec in recognizers.items()}
    detector, pool = next(iter(recognizers.values())).detector, ThreadPoolExecutor(2)
    pipelines["dicefer's Haar detection alone"] = detector
    pipelines["dicefer's Haar detection alone, split by face size across 2 threads (as predict does)"] = (
        lambda rgb: detector(rgb, pool=pool))
    pipelines["fer's Haar detection alone (reference)"] = lambda rgb: fer_cascade.detectMultiScale(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), **FER_HAAR)
    ms: dict[str, list[float]] = {name: [] for name in pipelines}
    for run in pipelines.values():  # warm-up
        run(images[0])
    for _ in range(rounds):
        for name, run in pipelines.items():
            times = []
            for image in images:
                start = time.perf_counter()
                run(image)
                times.append(1000 * (time.perf_counter() - start))
            ms[name].append(statistics.median(times))
        for name, run in batch.items():  # as `dicefer predict` does: detect each, classify the faces together
            start = time.perf_counter()
            run(images)
            ms.setdefault(name, []).append(1000 * (time.perf_counter() - start) / len(images))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run (default: train a few smoke steps at --size)")
    parser.add_argument("--size", type=int, default=PRESETS["demo"]["data"]["size"], help="input size when training")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="for PyTorch, onnxruntime and OpenCV alike")
    parser.add_argument("--label", default="inference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="dicefer-inference-"))
    run = args.run
    if run is None:
        run = work / "run"
        tiny = ["data.train_identities=4", "data.test_identities=2", "data.images_per_identity=10",
                "stage1.epochs=1", "stage3.epochs=1"]
        train_and_evaluate(build_config("smoke", None, [f"data.size={args.size}", *tiny]), run, show_progress=False)
    export_onnx(run, work / "model.onnx")
    export_onnx(run, work / "convs.onnx", dense=False)  # what the int8 quantizer takes
    check = quantize_int8(LoadedRun(run), work / "convs.onnx", work / "int8.onnx")
    detector = HaarDetector()
    recognizers = {"PyTorch eager": ExpressionRecognizer(TorchBackend(LoadedRun(run)), detector),
                   "onnxruntime": ExpressionRecognizer(OnnxBackend(work / "model.onnx", args.threads), detector),
                   "onnxruntime int8": ExpressionRecognizer(OnnxBackend(work / "int8.onnx", args.threads), detector)}
    images = photos(args.photos)
    found = sum(bool(faces) for faces in recognizers["onnxruntime"].predict_many(images))
    # The export's rewrite of small-map convolutions, undone for onnxruntime and done for PyTorch.
    dense_torch = TorchBackend(LoadedRun(run))
    spec = dense_torch.spec
    densify_small_maps(dense_torch.model, torch.zeros(1, *spec.face.shape))
    backends = {name: rec.backend for name, rec in recognizers.items()} | {
        ONNX_CONVS: OnnxBackend(work / "convs.onnx", args.threads), TORCH_DENSE: dense_torch}
    speed = classifier_speed(backends, args.rounds)
    latency = end_to_end(recognizers, images, args.rounds)
    write_doc(args, recognizers["onnxruntime"].backend.spec.face.size, load, speed, latency, found, len(images), check)


def write_doc(args, size: int, load: float, speed: dict, latency: dict, found: int, n_photos: int, check) -> None:
    med = {k: statistics.median(v) for k, v in speed.items()}
    lines = [
        f"## Inference speed, {size}x{size} grayscale model, CPU",
        "",
        (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
         f"{args.threads} threads each for torch {torch.__version__}, onnxruntime {onnxruntime.__version__} and "
         f"OpenCV {cv2.__version__}; {os.cpu_count()} CPU cores, load average {load:.1f} when it started. "
         f"{args.rounds} interleaved rounds; median over rounds, with the slowest and fastest round. "
         "Produced by `benchmarks/inference_benchmark.py`."),
        "",
        "Classifier alone (expression encoder + classifier on preprocessed faces), faces/s:",
        "",
        "| backend | batch 1 | batch 64 | batch 64 vs PyTorch eager |",
        "|---|---|---|---|",
    ]
    for name in ("PyTorch eager", TORCH_DENSE, "onnxruntime", ONNX_CONVS, "onnxruntime int8"):
        cells = [f"{med[name, n]:.0f} ({min(speed[name, n]):.0f}-{max(speed[name, n]):.0f})" for n in (1, 64)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {med[name, 64] / med['PyTorch eager', 64]:.2f}x |")
    lines += [
        "",
        (f"End to end on {n_photos} synthetic 192x192 photos (a face found in {found}), ms per photo: "
         "`ExpressionRecognizer.predict` on one RGB array at a time (Haar detection split across 2 threads, crop, preprocessing, classifier; "
         "median over photos), `predict_many` on all of them as `dicefer predict` does (faces classified "
         "in batches; total / photos), and the detection alone:"),
        "",
        "| pipeline | ms per photo | slowest-fastest round |",
        "|---|---|---|",
    ]
    for name, values in latency.items():
        lines.append(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f}-{min(values):.2f} |")
    lines += [
        "",
        (f"The int8 model (`dicefer export --int8`) against the float one on {check.faces} faces of the run's "
         f"evaluation split ({args.run or 'a few smoke steps: untrained'}): same label for "
         f"{100 * check.agreement:.1f}%, accuracy {check.accuracy_int8:.3f} against {check.accuracy_float:.3f}, "
         f"largest probability difference {check.max_difference:.3f}."),
    ]
    write_block(args.label, lines)


if __name__ == "__main__":
    main()
