"""Using a GPU well: bf16 autocast, channels_last, pinned memory, loader workers, torch.compile.

On the CPU the layout stays the default, data loads in the main process and a run resumes bit
for bit; convolutions on small maps may compute their weight gradient as a matmul, where this
machine measured that faster, and max pools in channels_last (models/cpu_layers.py). bf16 autocast is on by default only where the
CPU computes bf16 natively (AVX-512 BF16 or AMX): elsewhere bf16 is emulated, many times slower
than fp32 (docs/benchmarks.md has the figures).
"""
from __future__ import annotations

import functools
import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import get_worker_info

from dicefer.models.cpu_layers import use_fast_cpu_layers


@dataclass(frozen=True)
class Accelerator:
    device: torch.device
    compile: bool = False
    precision: str = "auto"  # auto | fp32 | bf16

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and (self.cuda or cpu_has_native_bf16()))

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast (no loss scaling needed) where `bf16` says so; else fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def module(self, module: nn.Module) -> nn.Module:
        """Move to the device; on CUDA convolutions run faster in channels_last, on the CPU with
        the small-map weight gradient."""
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.cuda else use_fast_cpu_layers(module)

    def compiled(self, module: nn.Module) -> nn.Module:
        """torch.compile when asked (--compile); the first steps then pay for compilation."""
        return torch.compile(module) if self.compile else module

    def move(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A batch on the device: non-blocking from pinned memory, images in channels_last on CUDA."""
        if not self.cuda:
            return tuple(t.to(self.device) for t in batch)
        return tuple(t.to(self.device, non_blocking=True,
                          memory_format=torch.channels_last if t.ndim == 4 else torch.preserve_format) for t in batch)

    def loader_options(self) -> dict:
        """DataLoader workers and pinned memory on CUDA; on the CPU, loading in the main process."""
        if not self.cuda:
            return {}
        return {"num_workers": loader_workers(), "pin_memory": True, "worker_init_fn": _seed_worker}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX); elsewhere bf16 is emulated, and slow."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel, several times faster on a CPU than PyTorch's default per-tensor loop."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def loader_workers() -> int:
    """The CPU cores of this machine shared by the processes that torchrun started on it, at most 8 each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1))


def _seed_worker(worker_id: int) -> None:
    """Each worker draws its own augmentations: it gets a copy of the dataset, random state included."""
    info = get_worker_info()
    if isinstance(getattr(info.dataset, "rng", None), random.Random):
        info.dataset.rng = random.Random(info.seed)
