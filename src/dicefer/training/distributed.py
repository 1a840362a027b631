"""torchrun and DistributedDataParallel: one process per device, or one plain process without a launcher.

Every function here is a no-op (or the identity) in a single process, so the training code has no
branches for it. Per-rank semantics, what each process computes on its own:

- batches: `batch_size` pairs (or images) per rank; one optimiser step averages the gradients of
  all ranks, so the effective batch is world_size x batch_size.
- MI estimators: the "marginal" samples of a critic are the other items of the rank's own batch
  (an image with the code of another image in that batch), as in a single process of that batch
  size. The MINE moving average and BatchNorm statistics are buffers that DDP broadcasts from
  rank 0 before every forward pass, so every rank starts a step from rank 0's values and the
  checkpoint (written by rank 0) holds them.
- Stage 2's adversary: its shuffles permute codes within the rank's batch, drawn from a
  generator seeded identically on every rank (the same permutation of different items).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dicefer.errors import ConfigError


@dataclass(frozen=True)
class Process:
    """Where this process sits: rank among world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when there is one; cuda: this process's GPU (LOCAL_RANK under torchrun)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init(device: str) -> Process:
    """Join torchrun's process group (nccl on GPU, gloo on CPU) or stay one plain process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local_rank)
    if world_size == 1:
        return Process(device=where)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    return Process(dist.get_rank(), world_size, local_rank, where)


def close(proc: Process) -> None:
    if proc.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, proc: Process) -> nn.Module:
    """DistributedDataParallel around `module` when there are several processes, else `module`."""
    if not proc.distributed:
        return module
    ids = [proc.device] if proc.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class AveragedGradients:
    """An optimiser that averages its gradients over ranks before stepping.

    For Stage 2's discriminator: it runs four times per step and its loss is back-propagated in a
    second backward pass after the encoder's, which DDP's reducer does not see; averaging here
    gives what DDP would. In one process, `averaged` returns the optimiser itself.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # the same list: learning-rate schedules reach the optimiser

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        world = dist.get_world_size()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def averaged(optimizer: torch.optim.Optimizer, proc: Process):
    return AveragedGradients(optimizer) if proc.distributed else optimizer


def all_sum(values: list[float], proc: Process) -> list[float]:
    """Sum a list of floats over ranks (same order on every rank)."""
    if not proc.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.all_reduce(t)
    return t.tolist()


def all_max(value: float, proc: Process) -> float:
    if not proc.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=proc.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def gather(obj, proc: Process) -> list:
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not proc.distributed:
        return [obj]
    out = [None] * proc.world_size
    dist.all_gather_object(out, obj)
    return out
