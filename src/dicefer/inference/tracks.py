"""People kept apart across the frames of a video or a webcam stream: each face gets the id of the
track whose last box it overlaps most (one-to-one, by the Hungarian assignment on box overlap),
or a new id; a track that finds no face for `patience` frames ends. A track's probabilities may
be averaged over its last `window` frames, so that a label does not flicker from frame to frame.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from dicefer.inference.detectors import Box
from dicefer.inference.recognizer import Face


def box_overlap(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """Intersection over union of every box of `a` with every box of `b` ([x, y, w, h] each)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None]
    w = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


@dataclass
class _Track:
    id: int
    box: Box
    missed: int = 0
    history: deque = field(default_factory=deque)


class Tracker:
    """Track ids for the faces of consecutive frames of one stream (`update` once per frame, in order)."""

    def __init__(self, min_overlap: float = 0.3, patience: int = 5, window: int = 1) -> None:
        if not 0 < min_overlap <= 1 or patience < 0 or window < 1:
            raise ValueError("Tracker needs 0 < min_overlap <= 1, patience >= 0 and window >= 1")
        self.min_overlap, self.patience, self.window = min_overlap, patience, window
        self.tracks: list[_Track] = []
        self.next_id = 1

    def update(self, faces: Sequence[Face]) -> list[Face]:
        """The faces of the next frame with their track ids (and, with window > 1, probabilities and
        label averaged over the track's last `window` frames)."""
        overlap = box_overlap([t.box for t in self.tracks], [f.box for f in faces])
        rows, cols = linear_sum_assignment(-overlap) if overlap.size else ((), ())
        matched = {c: self.tracks[r] for r, c in zip(rows, cols) if overlap[r, c] >= self.min_overlap}
        for track in self.tracks:
            track.missed += 1
        out = []
        for i, face in enumerate(faces):
            track = matched.get(i)
            if track is None:
                track = _Track(self.next_id, face.box, history=deque(maxlen=self.window))
                self.next_id += 1
                self.tracks.append(track)
            track.box, track.missed = face.box, 0
            track.history.append(np.array([face.probabilities[c] for c in face.probabilities]))
            out.append(self._smoothed(face, track))
        self.tracks = [t for t in self.tracks if t.missed <= self.patience]
        return out

    def _smoothed(self, face: Face, track: _Track) -> Face:
        classes = list(face.probabilities)
        p = np.mean(track.history, axis=0)
        return dataclasses.replace(face, track=track.id, label=classes[int(p.argmax())],
                                   probabilities=dict(zip(classes, p.tolist())))
