"""The `dicefer predict` loop: inputs -> frames -> faces (tracked through each video) -> records,
with a progress bar and one warning per input that cannot be used. Images are classified a few at a time, so that the faces
of several images share a batch."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm.auto import tqdm

from dicefer.inference.inputs import Frame, expand, frames
from dicefer.inference.outputs import Annotator, Csv, JsonLines, records
from dicefer.inference.recognizer import ExpressionRecognizer
from dicefer.inference.tracks import Tracker


@dataclass
class Summary:
    images: int = 0       # image files analysed
    frames: int = 0       # video frames analysed
    faces: int = 0
    failed: int = 0       # inputs that matched nothing or could not be read


def predict_inputs(recognizer: ExpressionRecognizer, inputs: list[str], sink: JsonLines | Csv,
                   annotator: Annotator | None = None, every: int = 10, show_progress: bool = True,
                   images_per_batch: int = 8, smooth: int = 1) -> Summary:
    """`smooth`: average each video track's probabilities over its last `smooth` analysed frames (1: off)."""
    summary = Summary()
    trackers: dict[str, Tracker] = {}  # one per video, faces tracked through its frames in order
    files, unmatched = expand(inputs)
    for message in unmatched:
        warn(message)
    summary.failed += len(unmatched)
    pending: list[Frame] = []

    def flush() -> None:
        for frame, faces in zip(pending, recognizer.predict_many([f.image for f in pending])):
            if frame.frame is not None:
                faces = trackers.setdefault(frame.source, Tracker(window=smooth)).update(faces)
            for record in records(frame, faces):
                sink.write(record)
            if annotator is not None:
                annotator.write(frame, faces)
            if frame.frame is None:
                summary.images += 1
            else:
                summary.frames += 1
            summary.faces += len(faces)
        pending.clear()

    bar = tqdm(files, unit="file", disable=not show_progress or len(files) < 2, file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        for frame in frames(path, every):
            if frame.error is not None:
                warn(frame.error)
                summary.failed += 1
                continue
            pending.append(frame)
            if len(pending) >= images_per_batch:
                flush()
                bar.set_postfix(faces=summary.faces, refresh=False)
    flush()
    return summary


def warn(message: str) -> None:
    tqdm.write(f"dicefer: warning: {message}", file=sys.stderr)
