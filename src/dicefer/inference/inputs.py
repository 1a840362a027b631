"""What `dicefer predict` was pointed at, as a stream of frames: image files, folders (recursively),
glob patterns and videos (every n-th frame, with its time). A file that cannot be read becomes a
frame with an error, so the caller warns once and goes on."""
from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dicefer.data.images import UnreadableImage, load_image

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass
class Frame:
    """An image to analyse, or why there is none. `frame` and `time` (seconds) only for video."""

    source: str
    image: np.ndarray | None = None
    frame: int | None = None
    time: float | None = None
    error: str | None = None


def expand(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """(files in order, without repeats; one message per input that matched nothing)."""
    files: dict[Path, None] = {}
    unmatched = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = _media_in(path)
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            found = [f for p in found for f in (_media_in(p) if p.is_dir() else [p])]
        if not found:
            unmatched.append(f"{text}: no such file, or no image or video in it")
        files.update(dict.fromkeys(found))
    return list(files), unmatched


def _media_in(folder: Path) -> list[Path]:
    """Images and videos below `folder`, by suffix: the other files of a dataset folder are not warnings."""
    known = set(Image.registered_extensions()) | VIDEO_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in known)


def frames(path: Path, every: int = 10) -> Iterator[Frame]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        yield from video_frames(path, every)
        return
    try:
        yield Frame(str(path), load_image(path))
    except UnreadableImage as err:
        yield Frame(str(path), error=str(err))


def video_frames(path: Path, every: int) -> Iterator[Frame]:
    """Frames 0, every, 2 * every, ... as RGB; `time` from the container's frame rate."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        yield Frame(str(path), error=f"{path}: not a video OpenCV can read")
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    index = 0
    try:
        while capture.grab():  # grab without decoding the frames we skip
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if ok:
                    time = index / fps if fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
                    yield Frame(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, round(time, 3))
            index += 1
    finally:
        capture.release()
    if index == 0:
        yield Frame(str(path), error=f"{path}: no frame could be decoded")
