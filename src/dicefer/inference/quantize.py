"""`dicefer export --int8`: the ONNX model with 8-bit weights and activations, for CPU serving.

At batch 1 a ResNet-18 on small faces is bound by reading its 45 MB of float weights, so 8-bit
weights and onnxruntime's integer convolutions make it faster (docs/benchmarks.md). It quantizes Conv nodes, so it
takes an export whose convolutions were all kept (export_onnx(dense=False)). The activation ranges are
calibrated on the run's own training faces, and the quantized model is scored against the float
one on the run's evaluation split, so the user sees what the speed costs.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dicefer.data.registry import load_dataset
from dicefer.data.torch_datasets import evaluation_faces
from dicefer.errors import UserError
from dicefer.models import build
from dicefer.inference.backends import INPUT, OnnxBackend
from dicefer.run import LoadedRun


@dataclass(frozen=True)
class QuantizationCheck:
    """How the int8 model compares with the float one on `faces` images of the evaluation split."""

    faces: int
    agreement: float          # fraction of faces given the same label by both
    accuracy_float: float
    accuracy_int8: float
    max_difference: float     # largest difference of a probability


def run_faces(run: LoadedRun, evaluated: bool, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` faces of the run's training split or (`evaluated`) the split it is scored on,
    preprocessed as evaluation does: float32 (n, C, S, S), and their labels."""
    cfg = run.config
    faces = load_dataset(cfg, progress=False)[int(evaluated)]
    keep = np.sort(np.random.default_rng(seed).permutation(len(faces.expression))[:n])
    dataset = evaluation_faces(faces.subset(keep), build.face_input(cfg))
    return np.stack([dataset[i][0].numpy() for i in range(len(dataset))]), faces.expression[keep]


def quantize_int8(run: LoadedRun, float_model: Path, out: Path, calibration_faces: int = 256,
                  check_faces: int = 1000) -> QuantizationCheck:
    """Write the int8 version of `float_model` (an export of `run`) to `out` and score it."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise UserError("--int8 needs onnxruntime: pip install 'dicefer[onnx]'") from None
    calibration = run_faces(run, False, calibration_faces, seed=0)[0]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        # The convolutions only (nearly all the weights and time), per-channel int8 weights and uint8
        # activations in QDQ format, which onnxruntime fuses into its integer kernels on x86 and ARM.
        # The linear layers stay float, so the code and the probabilities keep their precision.
        quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    # The quantizer keeps the graph but not the metadata that tells predict how to feed it.
    metadata = {p.key: p.value for p in onnx.load(str(float_model), load_external_data=False).metadata_props}
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, metadata | {"quantization": f"int8 static, calibrated on {len(calibration)} training faces"})
    onnx.save(model, str(out))
    return compare(OnnxBackend(float_model), OnnxBackend(out), *run_faces(run, True, check_faces, seed=1))


def compare(float_backend: OnnxBackend, int8_backend: OnnxBackend, x: np.ndarray, y: np.ndarray) -> QuantizationCheck:
    p_float = np.concatenate([float_backend(torch.from_numpy(b))[0] for b in np.array_split(x, max(1, len(x) // 64))])
    p_int8 = np.concatenate([int8_backend(torch.from_numpy(b))[0] for b in np.array_split(x, max(1, len(x) // 64))])
    label_float, label_int8 = p_float.argmax(1), p_int8.argmax(1)
    return QuantizationCheck(len(y), float((label_float == label_int8).mean()), float((label_float == y).mean()),
                             float((label_int8 == y).mean()), float(np.abs(p_float - p_int8).max()))
