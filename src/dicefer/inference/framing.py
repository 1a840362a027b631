"""How a detector's box becomes a crop framed like the run's training faces.

Detectors frame faces their own way (Haar's box is about the square of a FER2013 face, YuNet's is
narrower and taller), and datasets crop faces their own way. A run keeps a few of its training
faces (exemplars); the detector is run on each, enlarged and placed in a plain frame as in a
photo, and the median offset and size of the known face square against the box give the framing
for that detector and that run.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import cv2
import numpy as np

from dicefer.inference.detectors import Box, Detector

FACE_SIDE, CANVAS = 192, 320  # exemplars are enlarged to FACE_SIDE and centred in a CANVAS frame of mid-grey
MIN_FOUND = 8  # fewer detections than this on the exemplars: no calibration


@dataclass(frozen=True)
class Framing:
    """The training-face square in units of the box's longer side s: its centre is the box centre
    moved by (dx * s, dy * s), its side is scale * s."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    @classmethod
    def from_margin(cls, margin: float) -> Framing:
        """The box grown by `margin` of its side on every side, about its centre."""
        return cls(0.0, 0.0, 1.0 + 2.0 * margin)

    def __str__(self) -> str:
        return f"side {self.scale:.2f}x the box, centre shifted ({self.dx:+.3f}, {self.dy:+.3f}) box sides"


def square_crop(image: np.ndarray, box: Box, framing: Framing) -> np.ndarray:
    """The square `framing` puts around `box`; where it leaves the image, its edge pixels are repeated."""
    x, y, w, h = box
    s = max(w, h)
    side = max(1, round(s * framing.scale))
    x0 = round(x + w / 2 + framing.dx * s - side / 2)
    y0 = round(y + h / 2 + framing.dy * s - side / 2)
    height, width = image.shape[:2]
    crop = image[max(y0, 0):max(min(y0 + side, height), 0), max(x0, 0):max(min(x0 + side, width), 0)]
    pad = ((max(-y0, 0), max(y0 + side - height, 0)), (max(-x0, 0), max(x0 + side - width, 0)))
    if crop.size == 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    if any(sum(p) for p in pad):
        crop = np.pad(crop, pad + ((0, 0),) * (image.ndim - 2), mode="edge")
    return crop


def in_frame(face: np.ndarray) -> np.ndarray:
    """A face crop enlarged to FACE_SIDE and centred in a mid-grey CANVAS: a plain photo of it."""
    big = cv2.resize(face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
    frame = np.full((CANVAS, CANVAS, *face.shape[2:]), 128, np.uint8)
    start = (CANVAS - FACE_SIDE) // 2
    frame[start:start + FACE_SIDE, start:start + FACE_SIDE] = big
    return frame


def calibrate(detector: Detector, exemplars: np.ndarray) -> Framing | None:
    """The framing of `exemplars` (uint8 (N, H, W) or (N, H, W, 3) face crops) as `detector` boxes
    them: medians over the exemplars it finds (the largest box of each). None when it finds fewer
    than MIN_FOUND."""
    centre = CANVAS / 2
    found: list[tuple[float, float, float]] = []
    for face in exemplars:
        boxes = detector(in_frame(np.ascontiguousarray(face)))
        if not boxes:
            continue
        x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
        s = max(w, h)
        found.append(((centre - (x + w / 2)) / s, (centre - (y + h / 2)) / s, FACE_SIDE / s))
    if len(found) < MIN_FOUND:
        return None
    dx, dy, scale = (statistics.median(v) for v in zip(*found))
    return Framing(dx, dy, scale)
