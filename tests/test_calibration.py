"""Temperature scaling finds a temperature that is known, and the calibration error it reports
falls when the probabilities become honest. A run fits its temperature on faces it never trained
on, records it, reports the calibration error, and predicts with it."""
import json

import numpy as np
import pytest
import torch
from conftest import TINY
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from trees import class_tree

from dicefer.cli import main
from dicefer.config import build_config
from dicefer.data.base import FaceSet
from dicefer.data.registry import held_out_slice, load_training_data
from dicefer.errors import ConfigError, RunError
from dicefer.evaluation.calibration import expected_calibration_error, reliability, softmax
from dicefer.inference.backends import TorchBackend
from dicefer.run import LoadedRun
from dicefer.training.temperature import fit_temperature


def sampled(temperature: float, n: int = 20000, classes: int = 7, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): that temperature is the best one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    p = softmax(logits, temperature)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_finds_the_temperature_the_labels_were_drawn_with(true_t):
    logits, labels = sampled(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.06)


def test_calibration_error_falls_after_the_fitted_temperature():
    logits, labels = sampled(2.5)
    t = fit_temperature(logits[:10000], labels[:10000])
    before = expected_calibration_error(softmax(logits[10000:]), labels[10000:])
    after = expected_calibration_error(softmax(logits[10000:], t), labels[10000:])
    assert before > 0.1 and after < 0.02


def test_ece_by_hand():
    # two faces in the last bin (0.933-1], one right: |0.5 - 0.95| = 0.45; one face at 0.6, right: |1 - 0.6| = 0.4
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.4, 0.6]])
    labels = np.array([0, 1, 1])
    assert expected_calibration_error(p, labels) == pytest.approx((2 * 0.45 + 0.4) / 3)
    r = reliability(p, labels)
    assert r["count"].sum() == 3 and r["count"][14] == 2 and r["count"][8] == 1


def test_a_confidence_of_exactly_one_falls_in_the_last_bin():
    r = reliability(np.array([[1.0, 0.0]]), np.array([0]))
    assert r["count"][-1] == 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))


# ---------------------------------------------------------------- in a run


def numbered_faces(n: int) -> FaceSet:
    """Faces whose first two pixels spell their index, so that any subset can be traced back."""
    images = np.zeros((n, 4, 4), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return FaceSet(images, np.arange(n) % 7, None, "numbered", split="train")


def index_of(faces: FaceSet) -> set[int]:
    return set((faces.images[:, 0, 0].astype(int) * 256 + faces.images[:, 0, 1]).tolist())


def test_the_held_out_slice_is_never_trained_on_and_the_same_for_a_seed():
    cfg = build_config("smoke", None, ["data.calibration_holdout=0.25", "data.spec=fer2013:/nowhere"])
    faces = numbered_faces(400)
    kept, held = held_out_slice(cfg, faces)
    assert len(held) == 100 and len(kept) == 300
    assert index_of(kept).isdisjoint(index_of(held)) and index_of(kept) | index_of(held) == set(range(400))
    assert index_of(held_out_slice(cfg, faces)[1]) == index_of(held)
    other = build_config("smoke", None, ["data.calibration_holdout=0.25", "data.spec=fer2013:/nowhere", "seed=1"])
    assert index_of(held_out_slice(other, faces)[1]) != index_of(held)
    none = build_config("smoke", None, ["data.spec=fer2013:/nowhere"])
    assert held_out_slice(none, faces) == (faces, None)  # the default: nothing held out


def test_the_synthetic_benchmark_renders_unseen_people_to_calibrate_on():
    cfg = build_config("smoke", None, [])
    train, test, calibration = load_training_data(cfg, progress=False)
    assert calibration.split == "calibration"
    assert len(calibration) == 3 * cfg.data.images_per_identity  # 6 test people -> 3 for calibration
    assert set(np.unique(calibration.expression)) == set(range(7))  # every expression, like the test people
    assert not any((calibration.images[:1] == train.images).all(axis=(1, 2)))  # other people, other images


def test_the_val_split_calibrates_a_run_scored_on_test(tmp_path):
    root = class_tree(tmp_path / "fer", {"train": {"happy": 3, "sad": 3}, "val": {"happy": 2, "sad": 1},
                                         "test": {"happy": 1, "sad": 1}})
    cfg = build_config("smoke", None, [f"data.spec=fer2013:{root}", "data.calibration_holdout=0.3"])
    train, test, calibration = load_training_data(cfg, progress=False)
    assert calibration.split == "val" and len(calibration) == 3 and len(train) == 6  # nothing held out of train
    scored_on_val = build_config("smoke", None, [f"data.spec=fer2013:{root}", "data.calibration_holdout=0.5",
                                                 "data.eval_split=val"])
    train, val, held = load_training_data(scored_on_val, progress=False)
    assert val.split == "val" and len(held) == 3 and len(train) == 3  # val is scored: a slice of train instead


def test_a_holdout_beyond_half_of_train_is_refused():
    with pytest.raises(ConfigError, match="calibration_holdout"):
        build_config("smoke", None, ["data.calibration_holdout=0.8"])


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("calibrated") / "run"
    assert main(["train", "--preset", "smoke", "--out", str(run), "--quiet", *TINY]) == 0
    return run


def test_a_run_records_its_temperature_and_reports_calibration(calibrated_run):
    run = LoadedRun(calibrated_run)
    assert run.calibration["faces"] == 20 and run.calibration["fitted_on"] == "synthetic people rendered for it"
    report = json.loads((calibrated_run / "report" / "report.json").read_text())
    c = report["calibration"]
    assert c["temperature"] == run.temperature > 0 and 0 <= c["ece_before"] <= 1 and 0 <= c["ece_after"] <= 1
    assert (calibrated_run / "report" / "reliability.png").is_file()
    assert "## Calibration" in (calibrated_run / "report" / "report.md").read_text()


def test_predictions_are_the_logits_over_the_temperature(calibrated_run):
    run = LoadedRun(calibrated_run)
    backend = TorchBackend(run)
    x = backend.spec.example(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = run["classifier"](run["expression"](x)[0]).numpy()
    assert np.allclose(backend(x)[0], softmax(logits, run.temperature), atol=1e-5)
    assert not np.allclose(backend(x)[0], softmax(logits), atol=1e-3)  # the temperature is not 1


def test_damaged_calibration_metadata_is_a_run_error(calibrated_run, tmp_path):
    path = calibrated_run / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    broken = tmp_path / "run"
    broken.mkdir()
    save_file(load_file(str(path)), str(broken / "model.safetensors"), metadata=meta | {"calibration": '{"temperature": -1}'})
    with pytest.raises(RunError, match="calibration metadata is damaged"):
        LoadedRun(broken)


def test_the_onnx_export_carries_the_temperature(calibrated_run, tmp_path):
    from dicefer.inference.backends import OnnxBackend
    from dicefer.inference.onnx_export import export_onnx

    difference = export_onnx(calibrated_run, tmp_path / "model.onnx")
    assert difference is not None and difference <= 1e-3  # the same calibrated probabilities as PyTorch
    assert OnnxBackend(tmp_path / "model.onnx").temperature == pytest.approx(LoadedRun(calibrated_run).temperature)
