"""Face detectors behind one small interface: an image in, boxes [x, y, w, h] out.

Each detector also says how much margin its boxes need to frame a face the way training images
do: Haar and YuNet boxes are tight around brows, eyes and mouth, a whole-image "box" is not.
"""
from __future__ import annotations

import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dicefer.errors import UserError

Box = tuple[int, int, int, int]
DETECTORS = ("haar", "none", "yunet")


class Detector(Protocol):
    margin: float  # grow each box by this fraction of its side, on every side
    thread_safe: bool  # may be called from several threads at once (predict_many then detects in parallel)

    def __call__(self, image: np.ndarray) -> list[Box]:
        """uint8 (H, W) or RGB (H, W, 3) -> boxes, left to right."""


class WholeImage:
    """For inputs that are face crops already (RAF-DB aligned, FER2013): the face is the image."""

    margin = 0.0
    thread_safe = True

    def __call__(self, image: np.ndarray) -> list[Box]:
        return [(0, 0, image.shape[1], image.shape[0])]


class HaarDetector:
    """OpenCV's Viola-Jones cascade from the cascade files bundled in opencv-python 4.x.

    The alt2 cascade finds about as many faces as the default one in half its time. Large photos
    are searched at `max_side` pixels: faces there are big, and the cost grows with the area.
    A cascade keeps per-image state while it searches, so each thread gets its own.
    """

    thread_safe = True

    def __init__(self, cascade: str = "haarcascade_frontalface_alt2.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 48, max_side: int = 1024, margin: float = 0.2) -> None:
        self.path = Path(cv2.data.haarcascades) / cascade
        self._local = threading.local()
        self.window = min(self._cascade().getOriginalWindowSize())  # fails here, not on the first image, when missing
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.max_side, self.margin = min_size, max_side, margin

    def __call__(self, image: np.ndarray, pool: Executor | None = None) -> list[Box]:
        """With a pool, one photo's search is split by face size into two halves of about equal
        work that run at once (OpenCV's own threads keep 2 cores only partly busy on one photo);
        the boxes are the same as from one search."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        smallest = max(self.window, round(self.min_size * scale))
        if pool is None:
            found = self._search(gray, self.min_neighbors, smallest)
        else:
            split = self._split_size(gray.shape, smallest)
            small = pool.submit(self._search, gray, 0, smallest, split)
            raw = [*self._search(gray, 0, split + 1), *small.result()]
            # What detectMultiScale does after its search: merge overlapping hits, keep those with enough neighbours.
            found = cv2.groupRectangles([[int(v) for v in r] for r in raw], self.min_neighbors, 0.2)[0] if raw else []
        return sorted(tuple(round(float(v) / scale) for v in box) for box in found)

    def _search(self, gray: np.ndarray, min_neighbors: int, smallest: int, largest: int = 0):
        return self._cascade().detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=min_neighbors,
                                                minSize=(smallest, smallest), maxSize=(largest, largest))

    def _split_size(self, shape: tuple[int, ...], smallest: int) -> int:
        """The face size below which the search does half its work. Each scale costs about as many
        windows as fit in the image at it (OpenCV steps 2 pixels below scale 2, 1 above)."""
        sizes, costs, factor = [], [], 1.0
        while (size := round(self.window * factor)) <= min(shape[:2]):
            if size >= smallest:
                step = 1 if factor > 2 else 2
                sizes.append(size)
                costs.append(np.prod([(side / factor - self.window) / step + 1 for side in shape[:2]]))
            factor *= self.scale_factor
        half = np.searchsorted(np.cumsum(costs), sum(costs) / 2) if costs else 0
        return sizes[half] if half < len(sizes) else smallest

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self.path))
            if cascade.empty():
                raise UserError(f"OpenCV's Haar cascade {self.path} is missing; install opencv-python-headless>=4.8,<5")
        return cascade


class YuNetDetector:
    """OpenCV's FaceDetectorYN (a small CNN) with a model file the user provides
    (face_detection_yunet_*.onnx from the OpenCV model zoo). One network, resized per image: one thread."""

    thread_safe = False

    def __init__(self, model: Path, score_threshold: float = 0.6, margin: float = 0.15) -> None:
        if not Path(model).is_file():
            raise UserError(f"YuNet model file {model} does not exist (get face_detection_yunet_2023mar.onnx "
                            "from the OpenCV model zoo)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold)
        except cv2.error as err:
            raise UserError(f"{model} is not a YuNet model OpenCV can load: {str(err).strip().splitlines()[-1]}") from None
        self.margin = margin

    def __call__(self, image: np.ndarray) -> list[Box]:
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
        self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.net.detect(bgr)
        return [] if faces is None else sorted(tuple(round(float(v)) for v in face[:4]) for face in faces)


def build_detector(name: str, model: Path | None = None) -> Detector:
    if name == "yunet":
        if model is None:
            raise UserError("--detector yunet needs --detector-model PATH (face_detection_yunet_*.onnx)")
        return YuNetDetector(model)
    if model is not None:
        raise UserError(f"--detector-model is only used with --detector yunet, not {name}")
    if name == "haar":
        return HaarDetector()
    if name == "none":
        return WholeImage()
    raise UserError(f"unknown detector '{name}'; choose one of: {', '.join(DETECTORS)}")
