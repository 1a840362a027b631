"""Backbones: MobileFaceNet through every command, its input declaration carried by the run and its
export, face-recognition checkpoints loaded by name, and the identity reading on known codes."""
import glob
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import face_photo
from PIL import Image

from dicefer import ExpressionRecognizer
from dicefer.cli import main
from dicefer.config import build_config
from dicefer.errors import ConfigError, RunError
from dicefer.evaluation.identity import held_out_r2, reference_network
from dicefer.models import build
from dicefer.models.mobilefacenet import MobileFaceNet, MobileFaceNetEncoder
from dicefer.models.pretrained import InitError
from dicefer.run import LoadedRun

SHARED = Path(__file__).parents[2] / "shared"
CASIA = SHARED / "models" / "mobilefacenet_casia_webface.ckpt"
FER_VAL = SHARED / "data" / "fer2013" / "val"
MFN = ["model.backbone=mobilefacenet", "precision=fp32", "data.train_identities=4", "data.test_identities=2",
       "data.images_per_identity=10", "stage1.epochs=1", "stage3.epochs=1"]


def checkpoint_like_the_shared_one(path: Path, seed: int = 0) -> dict:
    """A MobileFaceNet face-recognition checkpoint in the shared file's layout, random weights."""
    torch.manual_seed(seed)
    state = MobileFaceNet().state_dict()
    torch.save({"epoch": 68, "net_state_dict": state}, path)
    return state


def test_mobilefacenet_has_the_papers_size_and_the_declared_input():
    assert 0.99e6 < sum(p.numel() for p in MobileFaceNet().parameters()) < 1.05e6  # the paper: 0.99 M
    cfg = build_config("smoke", None, ["model.backbone=mobilefacenet", "data.size=56"])
    face = build.face_input(cfg)
    assert (face.size, face.width, face.scaling) == (56, 48, "centred")  # its 112x96 aspect, its training scaling
    code, local = build.encoder(cfg)(torch.randn(2, *face.shape))
    assert code.shape == (2, 64) and local.shape == (2, MobileFaceNetEncoder.feature_channels, 7, 6)
    assert build.face_input(build_config("smoke")).scaling == "whiten"  # ResNet-18 keeps the paper's whitening


def test_a_face_recognition_checkpoint_loads_by_name_with_gray_filters_summed(tmp_path, caplog):
    state = checkpoint_like_the_shared_one(tmp_path / "fr.ckpt")
    cfg = build_config("smoke", None, ["model.backbone=mobilefacenet", f"model.init={tmp_path / 'fr.ckpt'}"])
    with caplog.at_level(logging.INFO, logger="dicefer"):
        encoder = build.encoder(cfg, cfg.model.init)
    assert "ignored 12 tensors beyond the trunk (linear7., linear1.)" in caplog.text
    assert torch.equal(encoder.conv1.conv.weight, state["conv1.conv.weight"].sum(1, keepdim=True))
    assert torch.equal(encoder.blocks[14].conv[6].weight, state["blocks.14.conv.6.weight"])
    # summing the RGB filters is exactly the network on a gray image given as R = G = B
    full = MobileFaceNet()
    full.load_state_dict(state)
    gray = torch.rand(2, 1, 56, 48)
    torch.testing.assert_close(encoder.eval().conv1(gray), full.eval().conv1(gray.repeat(1, 3, 1, 1)))


def test_a_checkpoint_of_another_network_names_what_did_not_match(tmp_path):
    torch.save({"net_state_dict": {"conv1.conv.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(2, 2)}},
               tmp_path / "other.ckpt")
    cfg = build_config("smoke", None, ["model.backbone=mobilefacenet", f"model.init={tmp_path / 'other.ckpt'}"])
    with pytest.raises(InitError, match=r"not a MobileFaceNet state dict \(missing .* tensors: conv1.bn.weight.*"
                                        r"unexpected 1 tensors: fc.weight\); 1 of"):
        build.encoder(cfg, cfg.model.init)
    with pytest.raises(ConfigError, match="ImageNet weights for resnet18 only"):
        build_config("smoke", None, ["model.backbone=mobilefacenet", "model.init=imagenet"])


def test_mobilefacenet_trains_evaluates_exports_and_predicts(tmp_path):
    pytest.importorskip("onnxruntime")
    run, onnx = tmp_path / "run", tmp_path / "m.onnx"
    assert main(["train", "--preset", "smoke", "--out", str(run), "--quiet", *MFN]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    assert main(["export", "--run", str(run), "--out", str(onnx)]) == 0
    Image.fromarray(face_photo()).save(tmp_path / "photo.png")
    from_run = ExpressionRecognizer.from_run(run, detector="haar")
    from_onnx = ExpressionRecognizer.from_onnx(onnx, detector="haar")
    assert from_onnx.backend.spec == from_run.backend.spec  # the declaration travels in the export
    assert (from_run.backend.spec.face.width, from_run.backend.spec.face.scaling) == (27, "centred")
    a, b = from_run.predict(tmp_path / "photo.png"), from_onnx.predict(tmp_path / "photo.png")
    assert len(a) == len(b) == 1 and a[0].box == b[0].box
    assert max(abs(a[0].probabilities[c] - b[0].probabilities[c]) for c in a[0].probabilities) < 1e-3
    assert json.loads((run / "report" / "report.json").read_text())["run"]["backbone"] == "mobilefacenet"
    assert LoadedRun(run).config.model.backbone == "mobilefacenet"


def test_identity_reading_on_codes_whose_answer_is_known():
    rng = np.random.default_rng(0)
    n = 600
    identity, expression = rng.normal(size=(n, 16)), rng.integers(0, 7, n)
    embedding = identity @ rng.normal(size=(16, 128)) * 0.2 + rng.normal(size=(7, 128))[expression]
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    assert held_out_r2(embedding, embedding, expression) > 0.95  # the embedding predicts itself
    assert held_out_r2(identity, embedding, expression) > 0.9  # what is left after expression is identity
    assert abs(held_out_r2(rng.normal(size=(n, 64)), embedding, expression)) < 0.02  # noise predicts nothing
    onehot = np.eye(7)[expression]
    assert abs(held_out_r2(onehot, embedding, expression)) < 0.02  # an expression code is not charged for expression
    assert held_out_r2(onehot, embedding, None) > 0.4  # ... which the raw embedding would charge it for
    assert 0.35 < held_out_r2(identity[:, :8], embedding, expression) < 0.65  # half the identity factors: about half


@pytest.mark.skipif(not CASIA.is_file() or not FER_VAL.is_dir(), reason="../shared models and FER2013 absent")
def test_the_shared_checkpoint_recognises_a_face_in_its_mirror_image():
    """Only a trained face-recognition network maps a face and its mirror image close together and
    different people apart: random weights map every face alike."""
    files = sorted(glob.glob(str(FER_VAL / "*" / "*.jpg")))[::50][:48]
    gray = np.stack([np.asarray(Image.open(f).convert("L").resize((96, 112), Image.Resampling.BILINEAR)) for f in files])
    x = torch.tensor((gray.astype(np.float32) - 127.5) / 128)[:, None].repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    gaps = {}
    for name, net in (("trained", reference_network(CASIA)), ("random", MobileFaceNet().eval())):
        with torch.no_grad():
            a, b = (torch.nn.functional.normalize(net(v), dim=1) for v in (x, x.flip(-1)))
        others = (a @ a.T).fill_diagonal_(float("nan"))
        gaps[name] = float((a * b).sum(1).mean() - others.nanmean())
    assert gaps["trained"] > 0.6 and gaps["random"] < 0.2, gaps


def test_a_run_is_refused_when_its_recorded_input_is_not_what_would_be_fed(tiny_run, tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert LoadedRun(run).config.data.size == json.loads(meta["input"])["size"]  # recorded as trained
    face = json.loads(meta["input"]) | {"scaling": "centred"}  # as if the backbone's declaration had changed
    save_file(load_file(str(path)), str(path), metadata=meta | {"input": json.dumps(face)})
    with pytest.raises(RunError, match="was trained on faces given as"):
        LoadedRun(run)
