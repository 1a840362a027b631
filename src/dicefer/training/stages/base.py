"""What every stage is: one module that owns its networks, its optimisers and its step."""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

SHARED = ("expression", "identity", "classifier")  # networks that pass from stage to stage, named alike in each


class StepResult(NamedTuple):
    """One step: a loss for each of the stage's optimisers, in their order, and the floats it logs."""

    losses: tuple[torch.Tensor, ...]
    logs: dict[str, float]


class Stage(nn.Module):
    """One stage of a method.

    Its networks are submodules and its running state is buffers (or extra state), so `state_dict()`
    holds all of it; the networks it shares with other stages keep the names in SHARED. `optimizers`
    lists its optimisers in the order the runner back-propagates their losses: each loss is
    back-propagated after zeroing its own optimiser's gradients, so a later optimiser overwrites what
    an earlier loss left in its parameters. Wrapped copies (DDP, torch.compile) live outside the
    module tree, so that no `module.` prefix reaches a saved name.
    """

    name: ClassVar[str]
    every_epoch: ClassVar[bool] = True  # checkpoint after every epoch; False: only at the stage's end
    saves: ClassVar[tuple[str, ...]] = ()  # the networks model.safetensors holds once the stage has ended
    images_per_item: ClassVar[int] = 1  # 2 for stages on pairs: both images of a pair pass the encoder
    optimizers: tuple[torch.optim.Optimizer, ...]
    loader: DataLoader
    epochs: int

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        raise NotImplementedError

    def images(self, batch: tuple[torch.Tensor, ...]) -> int:
        """Images one batch puts through the encoder (for images/s)."""
        return self.images_per_item * len(batch[0])

    def scored(self) -> tuple[nn.Module, nn.Module] | None:
        """(encoder, head) whose accuracy `monitor` logs after an epoch; None for a stage without a head."""
        return None

    def saved(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.saves}

    def load_shared(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take the shared networks found in another stage's `state` (a run resumed after this stage ended)."""
        for name in SHARED:
            prefix = name + "."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if part and hasattr(self, name):
                getattr(self, name).load_state_dict(part)
