"""`ExpressionRecognizer`: detect faces, preprocess them as in training, classify them in batches."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicefer.data.images import ImageLike, load_image
from dicefer.inference.backends import OnnxBackend, TorchBackend
from dicefer.inference.detectors import (
    Box,
    Detector,
    HaarDetector,
    WholeImage,
    build_detector,
)
from dicefer.inference.framing import MIN_FOUND, Framing, calibrate, square_crop
from dicefer.run import LoadedRun


@dataclass(frozen=True)
class Face:
    """One detected face: its box [x, y, w, h] in the image, the most likely class, all probabilities,
    and in a video or a stream the id of the person's track (inference/tracks.py)."""

    box: Box
    label: str
    probabilities: dict[str, float]
    track: int | None = None


class ExpressionRecognizer:
    """Facial expressions in photos, with a model from a run folder (PyTorch) or an ONNX export.

    rec = ExpressionRecognizer.from_run("runs/demo")
    faces = rec.predict("photo.jpg")            # path, PIL image or RGB numpy array
    """

    def __init__(self, backend: TorchBackend | OnnxBackend, detector: Detector, margin: float | None = None,
                 batch_size: int = 64) -> None:
        """margin=None frames each detected face like the run's training faces (see framing.py);
        a number grows the box by that fraction of its side instead."""
        self.backend, self.detector, self.batch_size = backend, detector, batch_size
        self._pool: ThreadPoolExecutor | None = None
        self.framing = self._framing(margin)

    def _framing(self, margin: float | None) -> Framing:
        if margin is not None:
            return Framing.from_margin(margin)
        if isinstance(self.detector, WholeImage):
            return Framing()
        if self.backend.exemplars is None:
            warnings.warn(f"this model keeps no training faces to frame detections like them (trained before "
                          f"they were kept): its boxes get the detector's margin {self.detector.margin}", stacklevel=3)
            return Framing.from_margin(self.detector.margin)
        framing = calibrate(self.detector, self.backend.exemplars)
        if framing is None:
            warnings.warn(f"the detector found fewer than {MIN_FOUND} of the model's {len(self.backend.exemplars)} "
                          f"training faces: its boxes get its margin {self.detector.margin}", stacklevel=3)
            return Framing.from_margin(self.detector.margin)
        return framing

    @classmethod
    def from_run(cls, run_dir: str | Path, detector: str = "haar", detector_model: Path | None = None,
                 **kwargs) -> ExpressionRecognizer:
        """detector: haar (default), none (inputs are face crops) or yunet (with detector_model)."""
        return cls(TorchBackend(LoadedRun(Path(run_dir))), build_detector(detector, detector_model), **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, detector: str = "haar", detector_model: Path | None = None,
                  **kwargs) -> ExpressionRecognizer:
        """An export of `dicefer export`, run by onnxruntime (pip install 'dicefer[onnx]')."""
        return cls(OnnxBackend(Path(path)), build_detector(detector, detector_model), **kwargs)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.backend.spec.classes

    def predict(self, image: ImageLike) -> list[Face]:
        """Every face found in one image, left to right; [] when there is none."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[ImageLike]) -> list[list[Face]]:
        """Faces of several images, classified together in batches (faster than one by one)."""
        arrays = [load_image(image) for image in images]
        boxes = self._detect(arrays)
        crops = [square_crop(a, box, self.framing) for a, found in zip(arrays, boxes) for box in found]
        probabilities = self._probabilities(crops)
        faces, start = [], 0
        for found in boxes:
            faces.append([self._face(box, p) for box, p in zip(found, probabilities[start:start + len(found)])])
            start += len(found)
        return faces

    def embed(self, crops: Sequence[ImageLike]) -> dict[str, np.ndarray]:
        """Face crops (no detection) -> {"expression": (N, D)} and, when the run has an identity
        encoder (a DICE-FER run, not an ONNX export), {"identity": (N, D)}."""
        if not crops:
            raise ValueError("embed needs at least one face crop")
        batches = list(self._batches([load_image(c) for c in crops]))
        out = {"expression": np.concatenate([self.backend(x)[1] for x in batches])}
        identity = [self.backend.identity(x) for x in batches]
        if identity[0] is not None:
            out["identity"] = np.concatenate(identity)
        return out

    def _detect(self, arrays: list[np.ndarray]) -> list[list[Box]]:
        """OpenCV releases the GIL while it searches, so several photos are searched at once: one
        photo's search keeps the cores only partly busy.
        A single photo's Haar search is split by face size across the pool instead."""
        if not getattr(self.detector, "thread_safe", False):
            return [self.detector(a) for a in arrays]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="dicefer-detect")
        if len(arrays) == 1:
            return [self.detector(arrays[0], pool=self._pool) if isinstance(self.detector, HaarDetector)
                    else self.detector(arrays[0])]
        return list(self._pool.map(self.detector, arrays))

    def _batches(self, crops: list[np.ndarray]):
        for i in range(0, len(crops), self.batch_size):
            yield self.backend.spec.batch(crops[i:i + self.batch_size])

    def _probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate([self.backend(x)[0] for x in self._batches(crops)])

    def _face(self, box: Box, p: np.ndarray) -> Face:
        p = p.astype(np.float64) / p.sum()
        return Face(box, self.classes[int(p.argmax())], dict(zip(self.classes, p.tolist())))
