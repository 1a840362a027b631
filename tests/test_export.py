"""`dicefer export`: one ONNX graph that onnxruntime runs as PyTorch does (probabilities within
1e-4), with a dynamic batch axis and the preprocessing in its metadata."""
import json

import numpy as np
import pytest
import torch
from conftest import face_photo
from PIL import Image
from torch.fx.experimental.optimization import fuse

from dicefer import ExpressionRecognizer
from dicefer.cli import main
from dicefer.data.base import CLASSES
from dicefer.errors import UserError
from dicefer.inference.backends import ExpressionModel, OnnxBackend, TorchBackend
from dicefer.inference.dense_convs import densify_small_maps
from dicefer.models.encoders import Encoder
from dicefer.models.heads import Classifier
from dicefer.run import LoadedRun

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path)]) == 0
    return path


def test_onnxruntime_matches_pytorch(tiny_run, exported):
    torch_model, onnx_model = TorchBackend(LoadedRun(tiny_run)), OnnxBackend(exported)
    assert onnx_model.spec == torch_model.spec
    assert onnx_model.spec.classes == CLASSES and onnx_model.spec.face.size == 32 and onnx_model.spec.grayscale
    for n in (1, 5, 64):  # the batch axis is dynamic
        x = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(n))
        (p_torch, e_torch), (p_onnx, e_onnx) = torch_model(x), onnx_model(x)
        assert p_onnx.shape == (n, 7) and e_onnx.shape == (n, 64)
        assert np.abs(p_onnx - p_torch).max() < 1e-4
        assert np.abs(e_onnx - e_torch).max() < 1e-3


def test_small_map_convolutions_are_exported_as_matrix_products(tiny_run, exported, tmp_path):
    import onnx

    def counts(path):
        model = onnx.load(str(path))
        dense = int({p.key: p.value for p in model.metadata_props}["dense_convs"])
        return dense, sum(node.op_type == "Conv" for node in model.graph.node)

    assert counts(exported) == (7, 13)  # at 32 px: layer3 on 2x2 maps but its first conv, all of layer4
    kept = tmp_path / "convs.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(kept), "--keep-convs"]) == 0
    assert counts(kept) == (0, 20)  # ResNet-18: the stem, 16 in the blocks, 3 shortcuts


@pytest.mark.parametrize("size, expected", [(32, 7), (48, 4), (112, 0)])
def test_densified_model_computes_the_same_function(size, expected):
    torch.manual_seed(size)
    model = ExpressionModel(Encoder(64, 1), Classifier()).eval()
    for module in model.modules():  # batch norms away from identity, so that their folding is tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2), module.running_var.uniform_(0.5, 2), module.bias.data.normal_(0, 0.2)
    model = fuse(model)
    x = torch.randn(8, 1, size, size)
    with torch.no_grad():
        before = model(x)
        assert densify_small_maps(model, x[:1]) == expected
        after = model(x)
    assert torch.allclose(after[0], before[0], atol=1e-5) and torch.allclose(after[1], before[1], atol=1e-4)


def test_recognizers_agree_on_a_photo(tiny_run, exported, tmp_path, capsys):
    photo = face_photo(0, 3)
    from_run, from_onnx = ExpressionRecognizer.from_run(tiny_run), ExpressionRecognizer.from_onnx(exported)
    (a,), (b,) = from_run.predict(photo), from_onnx.predict(photo)
    assert a.box == b.box and a.label == b.label
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in CLASSES) < 1e-4
    assert set(from_onnx.embed([photo])) == {"expression"}  # the export has no identity encoder
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert main(["predict", "--quiet", "--onnx", str(exported), str(tmp_path / "photo.png")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == a.label and record["box"] == list(a.box)


def test_bad_onnx_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ExpressionRecognizer.from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="not an ONNX model onnxruntime can load"):
        ExpressionRecognizer.from_onnx(tmp_path / "junk.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="not an ONNX model onnxruntime can load"):
        ExpressionRecognizer.from_onnx(tmp_path / "empty.onnx")


def test_predict_with_an_empty_onnx_file_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["predict", "--onnx", str(tmp_path / "empty.onnx"), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an ONNX model onnxruntime can load" in err[0]


def test_int8_export_is_a_quarter_of_the_size_and_close_to_float(tiny_run, exported, tmp_path, capsys):
    path = tmp_path / "int8.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path), "--int8"]) == 0
    message = capsys.readouterr().err
    assert "int8" in message and "evaluation split" in message and "accuracy" in message
    run = LoadedRun(tiny_run)
    float_bytes = 4 * sum(p.numel() for name in ("expression", "classifier") for p in run[name].parameters())
    assert path.stat().st_size < float_bytes / 3  # 8-bit weights, not 32
    float_model, int8_model = OnnxBackend(exported), OnnxBackend(path)
    assert int8_model.spec == float_model.spec  # the preprocessing metadata survived quantization
    x = torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    (p_float, _), (p_int8, _) = float_model(x), int8_model(x)
    assert np.allclose(p_int8.sum(1), 1, atol=1e-5)
    assert 0 < np.abs(p_int8 - p_float).max() < 0.05  # quantized (not a copy), yet close
    assert not list(tmp_path.glob("tmp*"))  # the float intermediate is cleaned up


@pytest.fixture(scope="module")
def confident_run(tiny_run, tmp_path_factory):
    """tiny_run with its classifier's last layer scaled up: outputs far from flat, so that parity
    and label agreement are tested where they can fail."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = tmp_path_factory.mktemp("confident") / "run"
    shutil.copytree(tiny_run, run)
    path = run / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    last = sorted(k for k in tensors if k.startswith("classifier.") and k.endswith(".weight"))[-1]
    tensors[last] = tensors[last] * 40
    meta.pop("calibration", None)  # the temperature fitted to the unscaled classifier would flatten it again
    save_file(tensors, str(path), metadata=meta)
    return run


def faces_of(run) -> torch.Tensor:
    spec = TorchBackend(LoadedRun(run)).spec
    return spec.batch(list(LoadedRun(run).exemplars))


def test_parity_and_labels_on_a_model_whose_outputs_are_not_flat(confident_run, tmp_path):
    path = tmp_path / "confident.onnx"
    assert main(["export", "--run", str(confident_run), "--out", str(path)]) == 0
    x = faces_of(confident_run)
    (p_torch, _), (p_onnx, _) = TorchBackend(LoadedRun(confident_run))(x), OnnxBackend(path)(x)
    assert p_torch.max(1).mean() > 0.8 and len(set(p_torch.argmax(1))) > 1  # confident, and not one class
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    assert (p_onnx.argmax(1) == p_torch.argmax(1)).all()


def test_int8_gives_the_float_models_labels(confident_run, tmp_path, capsys):
    path = tmp_path / "int8.onnx"
    assert main(["export", "--run", str(confident_run), "--out", str(path), "--int8"]) == 0
    x = faces_of(confident_run)
    p_float, p_int8 = TorchBackend(LoadedRun(confident_run))(x)[0], OnnxBackend(path)(x)[0]
    assert (p_int8.argmax(1) == p_float.argmax(1)).mean() >= 0.9


def test_export_fails_when_the_graph_does_not_match_pytorch(tiny_run, tmp_path, capsys, monkeypatch):
    """A graph rewrite that changed the function (here: the dense rewrite plus a corrupted weight)
    must not leave an .onnx file behind."""
    from dicefer.inference import onnx_export

    def broken(model, example):
        count = densify_small_maps(model, example)
        with torch.no_grad():
            next(model.parameters()).mul_(-3)
        return count

    monkeypatch.setattr(onnx_export, "densify_small_maps", broken)
    path = tmp_path / "broken.onnx"
    assert main(["export", "--run", str(tiny_run), "--out", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "differ from PyTorch's" in err[-1] and "--keep-convs" in err[-1] and not path.exists()


def test_an_export_frames_detections_as_its_run_does(tiny_run, exported):
    from test_framing import FixedBox

    from dicefer.inference.framing import calibrate

    run = LoadedRun(tiny_run)
    assert np.array_equal(OnnxBackend(exported).exemplars, run.exemplars)
    framing = ExpressionRecognizer(OnnxBackend(exported), FixedBox()).framing
    assert framing == calibrate(FixedBox(), run.exemplars) == ExpressionRecognizer(TorchBackend(run), FixedBox()).framing
