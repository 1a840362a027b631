"""Where predictions go: one record per face as JSON lines or CSV, and annotated image copies."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

import cv2
from PIL import Image, UnidentifiedImageError

from dicefer.inference.inputs import Frame
from dicefer.inference.recognizer import Face

NO_FACE = "no face detected"
CSV_HEAD = "source,frame,time,x,y,w,h,label,"
ANNOTATED = b"dicefer predict --annotate"  # the JPEG comment of every annotated copy


def written_by_predict(path: Path) -> bool:
    """Whether `path` holds records that predict wrote (JSON lines with a source, or its CSV), or nothing."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
            if not first:
                return True
            if first.startswith(CSV_HEAD):
                return True
            lines = [first, *f]
        return all(isinstance(r := json.loads(line), dict) and "source" in r for line in lines if line.strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def written_by_annotate(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.info.get("comment") == ANNOTATED
    except (OSError, UnidentifiedImageError):
        return False


def records(frame: Frame, faces: list[Face]) -> list[dict]:
    """One record per face; an image without faces gets one record whose `note` says so."""
    where = {"source": frame.source}
    if frame.frame is not None:
        where |= {"frame": frame.frame, "time": frame.time}
    if not faces:
        return [where | {"box": None, "label": None, "probabilities": None, "note": NO_FACE}]
    return [where | {"box": list(f.box), "label": f.label, "probabilities": f.probabilities}
            | ({} if f.track is None else {"track": f.track}) for f in faces]


class JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record) + "\n")


class Csv:
    """Flat columns: the box as x, y, w, h, one probability column per class, and the track (video)."""

    def __init__(self, stream: TextIO, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.writer = csv.DictWriter(stream, ["source", "frame", "time", "x", "y", "w", "h", "label", *classes, "note",
                                              "track"])
        self.writer.writeheader()

    def write(self, record: dict) -> None:
        row = {k: record.get(k) for k in ("source", "frame", "time", "label", "note", "track")}
        row |= dict(zip("xywh", record["box"] or ()))
        row |= record["probabilities"] or {}
        self.writer.writerow(row)


def open_sink(path: Path | None, stream: TextIO, classes: tuple[str, ...]) -> JsonLines | Csv:
    """CSV for a .csv path, JSON lines otherwise (stdout when no path)."""
    if path is not None and path.suffix.lower() == ".csv":
        return Csv(stream, classes)
    return JsonLines(stream)


class Annotator:
    """Copies of the inputs with boxes and labels drawn, as DIR/<name>.jpg (video: <name>-f<frame>.jpg).
    A file already in DIR under that name is replaced only when it is an earlier annotated copy;
    otherwise the copy takes the next free name (<name>-2.jpg, ...)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, faces: list[Face]) -> Path:
        canvas = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR if frame.image.ndim == 3 else cv2.COLOR_GRAY2BGR)
        thickness = max(1, round(max(canvas.shape[:2]) / 400))
        for face in faces:
            x, y, w, h = face.box
            cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 220, 0), thickness)
            text = f"{face.label} {face.probabilities[face.label]:.2f}"
            cv2.putText(canvas, text, (x, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 220, 0),
                        thickness, cv2.LINE_AA)
        path = self.folder / self._name(frame)
        Image.fromarray(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)).save(path, quality=90, comment=ANNOTATED)
        return path

    def _name(self, frame: Frame) -> str:
        stem = Path(frame.source).stem + ("" if frame.frame is None else f"-f{frame.frame}")
        name, n = f"{stem}.jpg", 1
        # the same file name from two folders, or a file of the user's
        while name in self.used or ((self.folder / name).exists() and not written_by_annotate(self.folder / name)):
            n += 1
            name = f"{stem}-{n}.jpg"
        self.used.add(name)
        return name

