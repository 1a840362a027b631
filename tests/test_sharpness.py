"""Training faces blurrier than the evaluated ones: the check that measures it and `data.test_blur`
that matches them (evaluation, prediction and ONNX metadata blur; training images never)."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from dicefer.checkpoint import LoadedRun
from dicefer.cli import main
from dicefer.config import build_config
from dicefer.data.base import CLASSES
from dicefer.data.sharpness import advice, blur_gap
from dicefer.data.synthetic import SyntheticSpec, render_face
from dicefer.data.transforms import Preprocess, gaussian_blur
from dicefer.errors import ConfigError
from dicefer.inference.backends import TorchBackend
from dicefer.inference.preprocess import InputSpec


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Sharp uint8 faces (N, 48, 48) with the benchmark's nuisance (lighting, noise, pose)."""
    spec = SyntheticSpec(size=48)
    return np.stack([render_face(spec, i % 12, i % 7, nuisance=True, k=i) for i in range(240)])


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    x = gaussian_blur(torch.from_numpy(images).float().unsqueeze(1), sigma)
    return x.round().clamp(0, 255).squeeze(1).numpy().astype(np.uint8)


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_blur_gap_measures_the_blur_of_the_training_faces(faces, sigma):
    train, test = blurred(faces[:120], sigma), faces[120:]
    assert abs(blur_gap(train, test) - sigma) <= 0.5
    assert abs(blur_gap(test, train) + sigma) <= 0.5  # the evaluated faces are the blurrier


def test_faces_alike_have_no_gap(faces):
    assert blur_gap(faces[:120], faces[120:]) == 0.0
    rgb = np.repeat(faces[..., None], 3, axis=3)
    assert blur_gap(rgb[:120], rgb[120:]) == 0.0


def test_advice_names_the_setting_only_when_it_is_needed():
    assert "data.test_blur=3" in advice(3.0, 0.0)
    assert advice(3.0, 2.5) is None  # already matched
    assert advice(0.5, 0.0) is None  # too small to matter
    assert "blurrier than the training ones" in advice(-2.0, 0.0)


def test_test_blur_applies_to_evaluated_faces_not_to_training_ones(faces):
    data = build_config("smoke", None, ["data.test_blur=1.5"]).data
    x = torch.from_numpy(faces[:4]).float().div(255).unsqueeze(1)
    on_train = Preprocess.for_evaluation(data, training_images=True)(x, rng=None)
    on_test = Preprocess.for_evaluation(data)(x, rng=None)
    assert torch.equal(on_train, Preprocess("none", 0, True)(x, rng=None))
    assert torch.allclose(on_test, Preprocess("none", 0, True)(gaussian_blur(x, 1.5), rng=None), atol=1e-6)
    assert not torch.allclose(on_test, on_train, atol=0.1)
    assert Preprocess.for_training(data).blur == 0.0  # the training images are never blurred


def test_prediction_blurs_as_evaluation_does_and_the_onnx_metadata_says_so(faces):
    spec = InputSpec(48, True, CLASSES, True, blur=2.0)
    expected = Preprocess("none", 0, True, 2.0)(torch.from_numpy(faces[:3]).float().div(255).unsqueeze(1), rng=None)
    assert torch.equal(spec.batch(list(faces[:3])), expected)
    meta = spec.to_metadata()
    assert InputSpec.from_metadata(meta) == spec
    assert "Gaussian blur sigma 2" in meta["preprocessing"]
    assert InputSpec.from_metadata({k: v for k, v in meta.items() if k != "blur"}).blur == 0.0  # older exports


@pytest.mark.parametrize("value", ["-1", "20"])
def test_test_blur_out_of_range_is_a_config_error(value):
    with pytest.raises(ConfigError, match="data.test_blur must be between 0"):
        build_config("smoke", None, [f"data.test_blur={value}"])


def test_evaluate_sets_the_runs_test_blur_for_predict_too(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["evaluate", "--run", str(run), "--test-blur", "1.5"]) == 0
    assert LoadedRun(run).config.data.test_blur == 1.5
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["test_blur"] == 1.5
    assert json.loads((run / "report" / "report.json").read_text())["run"]["test_blur"] == 1.5
    assert TorchBackend(LoadedRun(run)).spec.blur == 1.5
    assert main(["evaluate", "--run", str(run), "--test-blur", "-2"]) == 2  # a user error; the run keeps 1.5
    assert "data.test_blur must be between 0" in capsys.readouterr().err
    assert LoadedRun(run).config.data.test_blur == 1.5
