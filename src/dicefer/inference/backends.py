"""The two ways to run a trained model on preprocessed faces: PyTorch from a run folder, or an
ONNX export with onnxruntime. Both take float32 (N, C, H, W) faces as InputSpec makes them and give class
probabilities and expression codes, so the recogniser does not care which one it holds."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from dicefer.errors import RunError, UserError
from dicefer.inference.preprocess import InputSpec
from dicefer.models import build
from dicefer.paths import shown
from dicefer.run import LoadedRun

INPUT, OUTPUTS = "input", ("probabilities", "expression_code")


class ExpressionModel(nn.Module):
    """Expression encoder + classifier + softmax of the logits over the run's temperature (calibrated
    probabilities): the graph both backends run, and the one exported."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.encoder, self.classifier, self.temperature = encoder, classifier, temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)[0]
        return torch.softmax(self.classifier(code) / self.temperature, dim=1), code


class TorchBackend:
    """Batch norms are folded into the convolutions before them (PyTorch's FX fuse): the same
    function in fewer operators, so fewer kernel launches per face."""

    def __init__(self, run: LoadedRun) -> None:
        if "classifier" not in run.modules or "expression" not in run.modules:
            raise RunError(f"{run.dir} has no trained classifier (stage '{run.stage}'): finish its training first")
        self.spec = InputSpec(build.face_input(run.config), run.classes)
        self.temperature = run.temperature
        self.model = fuse(ExpressionModel(run["expression"], run["classifier"], run.temperature).eval())
        identity = run.modules.get("identity")
        self.identity_encoder = None if identity is None else fuse(identity.eval())
        self.exemplars = run.exemplars

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probabilities, code = self.model(x)
        return probabilities.numpy(), code.numpy()

    @torch.no_grad()
    def identity(self, x: torch.Tensor) -> np.ndarray | None:
        return None if self.identity_encoder is None else self.identity_encoder(x)[0].numpy()


class OnnxBackend:
    """An export of `dicefer export`; its metadata holds the InputSpec. There is no identity code."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        ort = import_onnxruntime()
        if Path(path).is_dir():
            raise UserError(f"ONNX model {path} is a folder; give the .onnx file")
        if not Path(path).is_file():
            raise UserError(f"ONNX model {path} does not exist (write one with `dicefer export --run RUN --out {path}`)")
        from onnxruntime.capi import onnxruntime_pybind11_state as errors

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: on a shared CPU, spinning takes the cores that
        # the busy threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (errors.Fail, errors.InvalidGraph, errors.InvalidProtobuf, errors.InvalidArgument, errors.NoSuchFile,
                errors.RuntimeException) as err:
            raise UserError(f"{path} is not an ONNX model onnxruntime can load ({type(err).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "input_size" not in meta:
            raise UserError(f"{path} has no dicefer metadata (input_size, classes): export it with `dicefer export`")
        self.spec = InputSpec.from_metadata(meta)
        self.temperature = float(meta.get("temperature", 1.0))  # already in the graph; exports before 2026-12-06 have none
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = {o.name for o in self.session.get_outputs()}
        if inputs != [INPUT] or not set(OUTPUTS) <= outputs:
            raise UserError(f"{path} does not have the inputs and outputs of a `dicefer export` (input {INPUT!r}, "
                            f"outputs {', '.join(OUTPUTS)}; it has {shown(inputs)[:80]}): export it again with `dicefer export`")
        try:
            self.exemplars = exemplars_from_metadata(meta)
        except (ValueError, TypeError, KeyError):
            raise UserError(f"{path}: its exemplars metadata is damaged; export it again with `dicefer export`") from None

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probabilities, code = self.session.run(list(OUTPUTS), {INPUT: x.numpy()})
        return probabilities, code

    def identity(self, x: torch.Tensor) -> np.ndarray | None:
        return None


def exemplars_to_metadata(exemplars: np.ndarray | None) -> dict[str, str]:
    """The run's exemplar faces in an ONNX export's metadata (raw uint8 bytes, base64), for framing."""
    if exemplars is None:
        return {}
    return {"exemplars_shape": json.dumps(list(exemplars.shape)),
            "exemplars": base64.b64encode(np.ascontiguousarray(exemplars, dtype=np.uint8).tobytes()).decode("ascii")}


def exemplars_from_metadata(meta: dict[str, str]) -> np.ndarray | None:
    if "exemplars" not in meta:
        return None
    shape = json.loads(meta["exemplars_shape"])
    return np.frombuffer(base64.b64decode(meta["exemplars"]), dtype=np.uint8).reshape(shape)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'dicefer[onnx]'") from None
    return onnxruntime
