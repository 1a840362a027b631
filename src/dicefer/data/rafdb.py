"""`rafdb:PATH`: RAF-DB's basic set, PATH = basic/ (or the folder holding it).

EmoLabel/list_patition_label.txt (sic) has lines 'train_00001.jpg 5'; labels 1..7 are Surprise,
Fear, Disgust, Happiness, Sadness, Anger, Neutral, which is CLASSES' order; the file name prefix
gives the split. Images: Image/aligned/train_00001_aligned.jpg, or Image/original/train_00001.jpg.
"""
from __future__ import annotations

from pathlib import Path

from dicefer.data import numbers
from dicefer.data.base import CLASSES
from dicefer.data.listing import (
    DataError,
    Listing,
    read_text,
    require_dir,
    require_file,
)

LABELS = "EmoLabel/list_patition_label.txt"
LAYOUT = f"RAF-DB's basic/ folder: {LABELS} and Image/aligned/ (or Image/original/ with data.aligned=false)"


def load(root: Path, aligned: bool = True) -> dict[str, Listing]:
    if (root / "basic").is_dir() and not (root / "EmoLabel").exists():
        root = root / "basic"
    labels = require_file(root / LABELS, LAYOUT)
    images = require_dir(root / "Image" / ("aligned" if aligned else "original"), LAYOUT)
    found: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for number, line in enumerate(read_text(labels).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{labels}, line {number}: {line.strip()[:80]!r}; expected an image name and a label, as 'train_00001.jpg 5'")
        name = fields[0]
        label = numbers.integer(fields[1], f"{labels}, line {number}", "label", 1, len(CLASSES),
                                f"RAF-DB labels are 1..7 ({', '.join(CLASSES)})")
        split = name.split("_", 1)[0]
        if split not in found:
            raise DataError(f"{labels}, line {number}: {name} starts with neither train_ nor test_")
        stem, suffix = name.rsplit(".", 1) if "." in name else (name, "jpg")
        found[split][0].append(str(images / (f"{stem}_aligned.{suffix}" if aligned else name)))
        found[split][1].append(label - 1)
    return {s: Listing(f"rafdb {s}", paths, y, None, CLASSES) for s, (paths, y) in found.items() if paths}
