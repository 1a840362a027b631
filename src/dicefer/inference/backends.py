"""The two ways to run a trained model on preprocessed faces: PyTorch from a run folder, or an
ONNX export with onnxruntime. Both take whitened float32 (N, C, S, S) and give class
probabilities and expression codes, so the recogniser does not care which one it holds."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from ..checkpoint import LoadedRun
from ..errors import RunError, UserError
from .preprocess import InputSpec

INPUT, OUTPUTS = "input", ("probabilities", "expression_code")
MIN_FACES_PER_RUN = 8  # smaller batches run whole: splitting them costs more than it saves


class ExpressionModel(nn.Module):
    """Expression encoder + classifier + softmax: the graph both backends run, and the one exported."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.encoder, self.classifier = encoder, classifier

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)[0]
        return torch.softmax(self.classifier(code), dim=1), code


class TorchBackend:
    """Batch norms are folded into the convolutions before them (PyTorch's FX fuse): the same
    function in fewer operators (1.26x faces/s at batch 1, 1.06x at 64 on 2 cores)."""

    def __init__(self, run: LoadedRun) -> None:
        if "classifier" not in run.modules or "expression" not in run.modules:
            raise RunError(f"{run.dir} has no trained classifier (stage '{run.stage}'): finish its training first")
        self.spec = InputSpec(run.config.data.size, run.config.data.grayscale, run.classes, run.config.data.whiten)
        self.model = fuse(ExpressionModel(run["expression"], run["classifier"]).eval())
        identity = run.modules.get("identity")
        self.identity_encoder = None if identity is None else fuse(identity.eval())

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probabilities, code = self.model(x)
        return probabilities.numpy(), code.numpy()

    @torch.no_grad()
    def identity(self, x: torch.Tensor) -> np.ndarray | None:
        return None if self.identity_encoder is None else self.identity_encoder(x)[0].numpy()


class OnnxBackend:
    """An export of `dicefer export`; its metadata holds the InputSpec. There is no identity code.

    Each run uses one thread, and a large batch is split across `threads` runs at once (the
    session allows concurrent runs and releases the GIL): no hand-off between threads at every
    operator. Measured on 2 cores against one run on 2 threads: one face 0.35 ms sooner, batch 64
    3903 against 3242 faces/s with the int8 model.
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        ort = import_onnxruntime()
        if not Path(path).is_file():
            raise UserError(f"ONNX model {path} does not exist (write one with `dicefer export --run RUN --out {path}`)")
        from onnxruntime.capi import onnxruntime_pybind11_state as errors

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (errors.Fail, errors.InvalidGraph, errors.InvalidProtobuf) as err:
            raise UserError(f"{path} is not an ONNX model onnxruntime can load ({type(err).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "input_size" not in meta:
            raise UserError(f"{path} has no dicefer metadata (input_size, classes): export it with `dicefer export`")
        self.spec = InputSpec.from_metadata(meta)
        self.threads = threads or torch.get_num_threads()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dicefer-onnx") if self.threads > 1 else None

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        inputs = x.numpy()
        parts = min(self.threads, len(inputs) // MIN_FACES_PER_RUN)
        if self._pool is None or parts < 2:
            return self._run(inputs)
        results = list(self._pool.map(self._run, np.array_split(inputs, parts)))
        probabilities, code = (np.concatenate(r) for r in zip(*results))
        return probabilities, code

    def _run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, code = self.session.run(list(OUTPUTS), {INPUT: inputs})
        return probabilities, code

    def identity(self, x: torch.Tensor) -> np.ndarray | None:
        return None


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'dicefer[onnx]'") from None
    return onnxruntime
