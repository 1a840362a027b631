"""`fer2013:PATH`: the original CSV (emotion,pixels,Usage) or train/, val/, test/ class folders.

FER2013's emotion codes 0..6 are angry, disgust, fear, happy, sad, surprise, neutral; Usage
Training / PublicTest / PrivateTest become the splits train / val / test.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from dicefer.data import folder, numbers
from dicefer.data.base import CLASSES, canonical_class
from dicefer.data.images import UnreadableImage
from dicefer.data.listing import DataError, Listing, csv_rows, files_fingerprint

LAYOUT = "fer2013.csv with columns emotion,pixels,Usage, or train/, optional val/ and test/ with one sub-folder per class"
EMOTIONS = tuple(CLASSES.index(canonical_class(n)) for n in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
USAGES = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48


def load(root: Path, contempt: bool = True) -> dict[str, Listing]:
    csv_path = root if root.is_file() else root / "fer2013.csv"
    if csv_path.is_file():
        return from_csv(csv_path)
    if (root / "train").is_dir():
        return folder.load(root, contempt, "fer2013")
    raise DataError(f"{root} holds neither fer2013.csv nor train/; expected {LAYOUT}")


def from_csv(path: Path) -> dict[str, Listing]:
    """Labels are read now; pixels only when the decode cache is built (see PixelRows)."""
    rows: dict[str, list[int]] = {s: [] for s in USAGES.values()}
    labels: dict[str, list[int]] = {s: [] for s in USAGES.values()}
    reader = csv_rows(path)
    header = [h.strip() for h in next(reader, (1, []))[1]]
    if not {"emotion", "pixels", "Usage"} <= set(header):
        raise DataError(f"{path}, line 1: header {','.join(header)[:80] or '(empty)'}; expected {LAYOUT}")
    col_emotion, col_usage = header.index("emotion"), header.index("Usage")
    for line, row in reader:
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        emotion, usage = row[col_emotion].strip(), row[col_usage].strip()
        code = numbers.integer(emotion, f"{path}, line {line}", "emotion", 0, len(EMOTIONS) - 1, "FER2013 emotions are 0..6")
        if usage not in USAGES:
            raise DataError(f"{path}, line {line}: unknown Usage {usage!r}; expected one of {', '.join(USAGES)}")
        rows[USAGES[usage]].append(line)
        labels[USAGES[usage]].append(EMOTIONS[code])
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
            self.by_line = {line: row[self.column] for line, row in csv_rows(self.path) if len(row) > self.column}
        try:
            values = numbers.pixels(self.by_line[line], SIDE * SIDE)
        except ValueError as err:
            raise UnreadableImage(str(err)) from None
        return Image.fromarray(values.reshape(SIDE, SIDE))
