"""Training steps on a CPU, one variant against another: Stage 1, Stage 2 and baseline steps of a
preset, each built and stepped as training does (demo_benchmark.stage_steps), under the settings
the CPU could run them with: precision, memory format, the small-map convolutions, threads,
torch.compile. Cases are interleaved round by round and timed as medians, so a slow spell of a
shared machine hits every case alike; ratios are against the first variant given (by default
`before`, what training ran until 2026-12-06). Prints a table and writes its block of docs/benchmarks.md (one block per preset).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_steps.py [--preset demo] [--rounds 7] [--steps 3]
        [--variants today,fp32,fp32+channels_last,...] [--profile]

--profile also writes docs/cpu-profile-PRESET.md: the operators that take a step's time, per stage,
from torch.profiler, for the first two variants.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from demo_benchmark import ROOT, stage_steps, write_block
from torch.profiler import ProfilerActivity, profile

from dicefer.config import build_config
from dicefer.models.cpu_layers import PATHS, ChannelsLastMaxPool2d, SmallMapConv2d, machine_signature
from dicefer.training.accelerator import Accelerator, cpu_has_native_bf16


@dataclasses.dataclass(frozen=True)
class Variant:
    precision: str = "auto"
    channels_last: bool = False
    small_map: bool = True
    small_map_under_autocast: bool = True  # False: as dicefer ran before 2026-12-06
    small_map_paths: tuple[str, ...] = PATHS  # ("conv", "matmul_grad"): as dicefer ran on 2026-12-06
    channels_last_pool: bool = True  # False: as dicefer ran until 2026-12-06
    threads: int = 0  # 0: torch's default
    compile: bool = False


VARIANTS = {
    "before": Variant(small_map_under_autocast=False, small_map_paths=("conv", "matmul_grad"), channels_last_pool=False),
    "matmul-grad": Variant(small_map_paths=("conv", "matmul_grad"), channels_last_pool=False),
    "today": Variant(),
    "fp32": Variant(precision="fp32"),
    "bf16": Variant(precision="bf16"),
    "fp32+channels_last": Variant(precision="fp32", channels_last=True),
    "bf16+channels_last": Variant(precision="bf16", channels_last=True),
    "fp32+no-small-map": Variant(precision="fp32", small_map=False),
    "fp32+1-thread": Variant(precision="fp32", threads=1),
    "fp32+compiled": Variant(precision="fp32", compile=True),
    "compiled": Variant(compile=True),  # today's precision and pool; torch.compile gets PyTorch's convolutions
}


class VariantAccelerator(Accelerator):
    """The CPU accelerator training uses, with the variant's memory format and convolution choice."""

    def __init__(self, variant: Variant, precision: str) -> None:
        super().__init__(torch.device("cpu"), variant.compile, precision)
        object.__setattr__(self, "variant", variant)

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super().module(module) if self.variant.small_map else module
        for layer in module.modules():
            if isinstance(layer, SmallMapConv2d):
                layer.under_autocast = self.variant.small_map_under_autocast
                layer.allowed = self.variant.small_map_paths
            elif isinstance(layer, ChannelsLastMaxPool2d):
                layer.channels_last = self.variant.channels_last_pool
        return module.to(memory_format=torch.channels_last) if self.variant.channels_last else module

    def move(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not self.variant.channels_last:
            return batch
        return tuple(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in batch)


def build_cases(preset: str, names: list[str]) -> tuple[dict, int]:
    cases, images = {}, 0
    for name in names:
        variant = VARIANTS[name]
        if variant.precision == "bf16" and not cpu_has_native_bf16():
            continue
        cfg = build_config(preset, None, [] if variant.precision == "auto" else [f"precision={variant.precision}"])
        torch.manual_seed(0)
        steps, images = stage_steps(cfg, VariantAccelerator(variant, cfg.precision))
        for stage, step in steps.items():
            cases[name, stage] = (variant, step)
    return cases, images


def timed(variant: Variant, step: Callable[[], None], steps: int, default_threads: int) -> float:
    torch.set_num_threads(variant.threads or default_threads)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def profile_table(variant: Variant, step: Callable[[], None], default_threads: int, rows: int = 12) -> list[str]:
    """The operators of 3 steps that take the most time of their own, as a markdown table."""
    torch.set_num_threads(variant.threads or default_threads)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | calls | self time (ms per step) | share |", "|---|---|---|---|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.count // 3} | {e.self_cpu_time_total / 3e3:.1f} | "
                     f"{100 * e.self_cpu_time_total / total:.0f} % |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps timed together in one round of one case")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    default_threads = torch.get_num_threads()
    started = time.perf_counter()
    cases, images = build_cases(args.preset, names)
    for variant, step in cases.values():  # warm-up: compilation, the small-map choice, allocator
        for _ in range(2):
            timed(variant, step, 1, default_threads)
    times = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, (variant, step) in cases.items():
            times[key].append(images * args.steps / timed(variant, step, args.steps, default_threads))
    speed = {key: statistics.median(v) for key, v in times.items()}
    first = next(iter(dict.fromkeys(name for name, _ in cases)))
    cpu = machine_signature().split("|")[0]
    cfg = build_config(args.preset)
    lines = [f"## Training steps on a CPU, `{args.preset}` preset: what each setting buys", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({default_threads} thread{'s' if default_threads > 1 else ''} unless a variant says "
             f"otherwise, bf16 in hardware: {cpu_has_native_bf16()}), torch {torch.__version__}; full training "
             f"steps (forward, backward, optimisers, as the training loop takes them) of each stage on random faces "
             f"of the preset's input ({cfg.data.size} px, batch {cfg.batch_size} pairs, {images} images a step), "
             f"{args.rounds} rounds of {args.steps} steps, cases interleaved, medians; "
             f"{time.perf_counter() - started:.0f} s in all. `today` is what `dicefer train` runs on this CPU "
             f"(the preset's precision); `before` the same until 2026-12-06, when under bf16 autocast the small-map "
             f"convolutions still took PyTorch's weight gradient; `matmul-grad` the small-map weight gradient "
             f"under autocast too (dicefer on 2026-12-06 until the im2col path and the channels_last max "
             f"pool); `compiled` today's precision and pool with the encoders through torch.compile (inductor, "
             f"handed PyTorch's convolutions; compilation in the warm-up, not timed). Produced by "
             f"`benchmarks/cpu_steps.py`.", "",
             f"| variant | Stage 1 images/s | Stage 2 | baseline | Stage 1 against {first} |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(name for name, _ in cases):
        s1, s2, sup = (speed[name, stage] for stage in ("stage1", "stage2", "supervised"))
        lines.append(f"| {name} | {s1:.0f} | {s2:.0f} | {sup:.0f} | {s1 / speed[first, 'stage1']:.2f} |")
    for line in lines:
        print(line)
    write_block(f"cpu-steps-{args.preset}", lines)
    if args.profile:
        doc = [f"# Where a CPU training step's time goes: `{args.preset}` preset", "",
               f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, torch {torch.__version__}, with torch.profiler over "
               f"3 steps of each stage (after the timing of `benchmarks/cpu_steps.py --profile`); self time per "
               f"step of the operators that take the most. Figures in `docs/benchmarks.md`, block "
               f"`cpu-steps-{args.preset}`."]
        for name in names[:2]:
            for stage in ("stage1", "stage2", "supervised"):
                if (name, stage) in cases:
                    doc += ["", f"## {stage}, {name}", "", *profile_table(*cases[name, stage], default_threads)]
        (ROOT / "docs" / f"cpu-profile-{args.preset}.md").write_text("\n".join(doc) + "\n")


if __name__ == "__main__":
    main()
