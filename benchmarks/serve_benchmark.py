"""`dicefer serve` under load: POST /v1/predict with a 640x480 photo holding one face, from 1 and 4
concurrent clients, against an fp32 and an int8 ONNX export of one run; requests/s and p50/p95
latency (client side, send to answer), written to docs/benchmarks.md.

Both servers run at once (`dicefer serve --onnx`, subprocesses on the same machine as the
clients), and the cases alternate round by round, so a slow spell of a shared machine hits all
alike; latencies are pooled over rounds.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_benchmark.py --run runs/demo [--rounds 3] [--requests 40]

The run's dataset must be where it trained (the int8 export checks itself on it).
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from demo_benchmark import write_block
from PIL import Image

from dicefer.data.synthetic import SyntheticSpec, render_face
from dicefer.inference.onnx_export import export_onnx
from dicefer.inference.quantize import quantize_int8
from dicefer.models.cpu_layers import machine_signature
from dicefer.run import LoadedRun


def photo() -> bytes:
    """JPEG, 640x480 RGB: one rendered face (96 px) on a gray frame, as the page test's webcam shows it."""
    image = np.full((480, 640), 128, np.uint8)
    image[190:286, 272:368] = render_face(SyntheticSpec(size=96), 0, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([image] * 3)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dicefer", "serve", "--onnx", str(model), "--port", str(port)],
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/info", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server for {model} did not start")


def load(url: str, body: bytes, clients: int, requests: int) -> tuple[list[float], float]:
    """Each of `clients` threads sends `requests` requests one after another: latencies (s), wall (s)."""
    def client(_: int) -> list[float]:
        times = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(requests):
                start = time.perf_counter()
                r = c.post("/v1/predict", content=body, headers={"Content-Type": "image/jpeg"})
                times.append(time.perf_counter() - start)
                if r.status_code != 200 or len(r.json()["faces"]) != 1:
                    raise SystemExit(f"unexpected answer from {url}: {r.status_code} {r.text[:200]}")
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for ts in pool.map(client, range(clients)) for t in ts]
    return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="requests per client per round")
    args = parser.parse_args()
    body = photo()
    with tempfile.TemporaryDirectory() as tmp:
        models = {"fp32": Path(tmp) / "fp32.onnx", "int8": Path(tmp) / "int8.onnx"}
        export_onnx(args.run, models["fp32"], dense=False)  # single-image requests: Conv nodes (faster at batch 1)
        quantize_int8(LoadedRun(args.run), models["fp32"], models["int8"])
        servers = {name: start_server(path) for name, path in models.items()}
        try:
            cases = [(name, clients) for clients in (1, 4) for name in models]
            for name, clients in cases:  # warm-up
                load(servers[name][1], body, clients, 3)
            latencies = {case: [] for case in cases}
            walls = {case: 0.0 for case in cases}
            for _ in range(args.rounds):
                for name, clients in cases:
                    times, wall = load(servers[name][1], body, clients, args.requests)
                    latencies[name, clients] += times
                    walls[name, clients] += wall
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    cpu = machine_signature().split("|")[0]
    lines = ["## `dicefer serve`: POST /v1/predict, one 640x480 photo with one face", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({os.cpu_count()} cores; server and clients on the same "
             f"machine), run `{args.run.name}` exported to ONNX (fp32, and int8 by `dicefer export --int8`), Haar "
             f"detection, one JPEG photo; {args.rounds} rounds of {args.requests} requests per client, cases "
             f"alternating, latency from send to answer at the client. Produced by `benchmarks/serve_benchmark.py`.", "",
             "| model | clients | requests/s | p50 latency (ms) | p95 latency (ms) |", "|---|---|---|---|---|"]
    for name, clients in cases:
        ts = sorted(latencies[name, clients])
        p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
        lines.append(f"| {name} | {clients} | {len(ts) / walls[name, clients]:.1f} | "
                     f"{1000 * statistics.median(ts):.1f} | {1000 * p95:.1f} |")
    p95_int8 = sorted(latencies["int8", 1])[int(round(0.95 * (len(latencies["int8", 1]) - 1)))]
    lines += ["", f"Target: p95 under 50 ms with one client on int8: {'met' if p95_int8 < 0.05 else 'missed'} "
                  f"({1000 * p95_int8:.1f} ms)."]
    write_block("serve", lines)


if __name__ == "__main__":
    main()
