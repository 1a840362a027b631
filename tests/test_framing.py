"""Framing detections like the training faces: the crop maths, calibration on exemplars, and the
exemplars a run keeps (in its weights file and in an ONNX export)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicefer.inference import ExpressionRecognizer
from dicefer.inference.backends import exemplars_from_metadata, exemplars_to_metadata
from dicefer.inference.framing import (
    CANVAS,
    FACE_SIDE,
    MIN_FOUND,
    Framing,
    calibrate,
    in_frame,
    square_crop,
)
from dicefer.run import EXEMPLARS, LoadedRun

YUNET = Path(__file__).parents[2] / "shared" / "models" / "face_detection_yunet_2026may.onnx"
FER2013_VAL = Path(__file__).parents[2] / "shared" / "data" / "fer2013" / "val"


class FixedBox:
    """A detector that always answers the same box (a narrow, tall one, off the face's centre)."""

    margin, thread_safe = 0.15, True

    def __init__(self, box=(110, 100, 90, 120), found: int = 10**9) -> None:
        self.box, self.left = box, found

    def __call__(self, image: np.ndarray):
        self.left -= 1
        return [self.box] if self.left >= 0 else []


def faces(n: int = 16, side: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)


def test_calibrated_framing_recovers_the_training_face_square():
    detector = FixedBox()
    framing = calibrate(detector, faces())
    start = (CANVAS - FACE_SIDE) // 2
    photo = in_frame(faces()[0])
    crop = square_crop(photo, detector.box, framing)
    assert crop.shape == (FACE_SIDE, FACE_SIDE)
    assert np.array_equal(crop, photo[start:start + FACE_SIDE, start:start + FACE_SIDE])
    # the margin framing of the same box is a different square
    assert not np.array_equal(square_crop(photo, detector.box, Framing.from_margin(0.15))[:10, :10], crop[:10, :10])


def test_calibration_needs_enough_detections():
    assert calibrate(FixedBox(found=MIN_FOUND - 1), faces()) is None
    assert calibrate(FixedBox(found=MIN_FOUND), faces()) is not None


def test_colour_exemplars_are_calibrated_too():
    colour = np.repeat(faces()[..., None], 3, axis=3)
    assert calibrate(FixedBox(), colour) == calibrate(FixedBox(), faces())


def test_a_run_keeps_exemplars_and_an_onnx_export_carries_them(tiny_run):
    run = LoadedRun(tiny_run)
    size = run.config.data.size
    assert run.exemplars.dtype == np.uint8 and run.exemplars.shape[1:] == (size, size)
    assert 1 <= len(run.exemplars) <= EXEMPLARS and run.exemplars.std() > 0
    back = exemplars_from_metadata(exemplars_to_metadata(run.exemplars))
    assert np.array_equal(back, run.exemplars)


def test_recognizer_frames_with_calibration_unless_a_margin_is_given(tiny_run):
    calibrated = ExpressionRecognizer.from_run(tiny_run, detector="none")
    assert calibrated.framing == Framing()
    from dicefer.inference.backends import TorchBackend

    backend = TorchBackend(LoadedRun(tiny_run))
    assert ExpressionRecognizer(backend, FixedBox()).framing == calibrate(FixedBox(), backend.exemplars)
    assert ExpressionRecognizer(backend, FixedBox(), margin=0.3).framing == Framing.from_margin(0.3)
    backend.exemplars = None
    with pytest.warns(UserWarning, match="keeps no training faces"):
        assert ExpressionRecognizer(backend, FixedBox()).framing == Framing.from_margin(0.15)
    backend.exemplars = faces()
    with pytest.warns(UserWarning, match=f"fewer than {MIN_FOUND}"):
        assert ExpressionRecognizer(backend, FixedBox(found=2)).framing == Framing.from_margin(0.15)


@pytest.mark.skipif(not YUNET.is_file() or not FER2013_VAL.is_dir(), reason="needs ../shared's YuNet model and FER2013 val/")
def test_yunet_on_real_faces_finds_them_and_calibrates_near_the_face_square():
    from PIL import Image

    from dicefer.inference.detectors import YuNetDetector

    files = sorted(FER2013_VAL.glob("*/*.jpg"))[::97][:32]
    exemplars = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    detector = YuNetDetector(YUNET)
    found = sum(bool(detector(in_frame(face))) for face in exemplars)
    assert found >= 0.9 * len(exemplars)
    framing = calibrate(detector, exemplars)
    assert 0.8 < framing.scale < 1.2 and abs(framing.dx) < 0.1 and abs(framing.dy) < 0.1
