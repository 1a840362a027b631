"""`fer2013:PATH`: the original CSV (emotion,pixels,Usage) or train/, val/, test/ class folders.

FER2013's emotion codes 0..6 are angry, disgust, fear, happy, sad, surprise, neutral; Usage
Training / PublicTest / PrivateTest become the splits train / val / test.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DataConfig
from . import folder
from .base import CLASSES, canonical_class
from .images import UnreadableImage
from .listing import DataError, Listing, files_fingerprint

LAYOUT = "fer2013.csv with columns emotion,pixels,Usage, or train/, optional val/ and test/ with one sub-folder per class"
EMOTIONS = tuple(CLASSES.index(canonical_class(n)) for n in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
USAGES = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48


def load(root: Path, data: DataConfig) -> dict[str, Listing]:
    csv_path = root if root.is_file() else root / "fer2013.csv"
    if csv_path.is_file():
        return from_csv(csv_path)
    if (root / "train").is_dir():
        return folder.load(root, data, "fer2013")
    raise DataError(f"{root} holds neither fer2013.csv nor train/; expected {LAYOUT}")


def from_csv(path: Path) -> dict[str, Listing]:
    """Labels are read now; pixels only when the decode cache is built (see PixelRows)."""
    rows: dict[str, list[int]] = {s: [] for s in USAGES.values()}
    labels: dict[str, list[int]] = {s: [] for s in USAGES.values()}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if not {"emotion", "pixels", "Usage"} <= set(header):
            raise DataError(f"{path}, line 1: header {','.join(header) or '(empty)'}; expected {LAYOUT}")
        col_emotion, col_usage = header.index("emotion"), header.index("Usage")
        for row in reader:
            line = reader.line_num
            if len(row) != len(header):
                raise DataError(f"{path}, line {line}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
            emotion, usage = row[col_emotion].strip(), row[col_usage].strip()
            if not emotion.isdigit() or int(emotion) >= len(EMOTIONS):
                raise DataError(f"{path}, line {line}: unknown emotion {emotion!r}; FER2013 emotions are 0..6")
            if usage not in USAGES:
                raise DataError(f"{path}, line {line}: unknown Usage {usage!r}; expected one of {', '.join(USAGES)}")
            rows[USAGES[usage]].append(line)
            labels[USAGES[usage]].append(EMOTIONS[int(emotion)])
    pixels = PixelRows(path, header.index("pixels"))
    fingerprint = files_fingerprint([path])
    return {
        split: Listing(f"fer2013 {split}", [f"{path}:{line}" for line in lines], labels[split], None, CLASSES,
                       read=lambda i, lines=lines: pixels.image(lines[i]), fingerprint=fingerprint)
        for split, lines in rows.items() if lines
    }


class PixelRows:
    """The CSV's pixel strings, read on the first request (a cache hit never needs them)."""

    def __init__(self, path: Path, column: int) -> None:
        self.path, self.column = path, column
        self.by_line: dict[int, str] | None = None

    def image(self, line: int) -> Image.Image:
        if self.by_line is None:
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                self.by_line = {}
                for row in reader:
                    self.by_line[reader.line_num] = row[self.column]
        try:
            values = np.array(self.by_line[line].split(), dtype=np.int64)
        except ValueError:
            raise UnreadableImage("pixel values are not all integers") from None
        if len(values) != SIDE * SIDE or values.min() < 0 or values.max() > 255:
            raise UnreadableImage(f"expected {SIDE * SIDE} pixel values 0..255, got {len(values)} values")
        return Image.fromarray(values.astype(np.uint8).reshape(SIDE, SIDE))
