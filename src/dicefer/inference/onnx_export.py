"""`dicefer export`: expression encoder + classifier as one ONNX graph, checked against PyTorch.

The graph takes faces (N, C, H, W) with a dynamic batch axis and returns class probabilities
(calibrated: the run's temperature is in the graph, and in the metadata) and the expression code; how to make its input (size, width, channels, classes, the pixel scaling of
the run's backbone) is recorded in the model's metadata, so serving needs the .onnx file alone.
Convolutions on maps of a few positions are written as matrix products (dense_convs.py).
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from dicefer import __version__
from dicefer.errors import RunError, UserError
from dicefer.inference.backends import (
    INPUT,
    OUTPUTS,
    OnnxBackend,
    TorchBackend,
    exemplars_to_metadata,
    import_onnxruntime,
)
from dicefer.inference.dense_convs import densify_small_maps
from dicefer.paths import atomic_write
from dicefer.run import LoadedRun

OPSET = 17
PARITY = 1e-3  # the largest probability difference from PyTorch an export may have


def export_onnx(run_dir: Path, out: Path, opset: int = OPSET, dense: bool = True) -> float | None:
    """Write `out`; return the largest difference of probabilities between onnxruntime and
    PyTorch on random inputs, or None when onnxruntime is not installed to check it.
    `dense=False` keeps every convolution a Conv node (the int8 quantizer only quantizes those)."""
    try:
        import onnx
    except ImportError:
        raise UserError("exporting needs the onnx package: pip install 'dicefer[onnx]'") from None
    run = LoadedRun(Path(run_dir))
    backend = TorchBackend(run)
    spec = backend.spec
    example = torch.zeros(1, *spec.face.shape)
    torch_model = copy.deepcopy(backend.model)  # the backend keeps its convolutions
    dense_convs = densify_small_maps(torch_model, example) if dense else 0
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but it needs no onnxscript and handles a ResNet fully.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch_model, (example,), buffer, dynamo=False,
                          input_names=[INPUT], output_names=list(OUTPUTS), opset_version=opset,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)})
    model = onnx.load_from_string(buffer.getvalue())
    meta = (spec.to_metadata() | {"dicefer_version": __version__, "source_run": str(run_dir),
                                 "method": run.config.method, "stage": run.stage,
                                 "dense_convs": str(dense_convs), "temperature": repr(backend.temperature)}
            | exemplars_to_metadata(backend.exemplars))
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    atomic_write(Path(out), lambda tmp: onnx.save(model, tmp))
    try:
        import_onnxruntime()
    except UserError:
        return None
    difference = max_difference(backend, OnnxBackend(Path(out)))
    if not difference <= PARITY:
        Path(out).unlink()
        raise RunError(f"the ONNX graph's probabilities differ from PyTorch's by up to {difference:.2e} (more than "
                       f"{PARITY:g}), so {out} was not kept" + ("; try --keep-convs" if dense else ""))
    return difference


def written_by_export(path: Path) -> bool:
    """Whether `path` is an ONNX model that `dicefer export` wrote: its metadata says so."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 -- whatever fails to load as ONNX is not an export
        return False
    return any(p.key == "dicefer_version" for p in model.metadata_props)


def max_difference(backend: TorchBackend, exported: OnnxBackend, n: int = 64) -> float:
    """Largest absolute difference of probabilities on `n` random inputs."""
    x = backend.spec.example(n, torch.Generator().manual_seed(0))
    return float(np.abs(backend(x)[0] - exported(x)[0]).max())

