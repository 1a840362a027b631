"""`oulu:PATH`: Oulu-CASIA frame folders <subject>/<expression>/*.jpeg (for example the VL/Strong
folder of OriginalImg), the last data.peak_frames frames of each sequence as its peak expression."""
from __future__ import annotations

import re
from pathlib import Path

from dicefer.data.base import CLASSES
from dicefer.data.folder import class_folders
from dicefer.data.folds import subject_folds
from dicefer.data.listing import DataError, Listing, image_files

LAYOUT = "one folder per subject (P001/), each with one frame folder per expression (P001/Happiness/000.jpeg ...)"


def load(root: Path, fold: int = 1, folds: int = 10, peak_frames: int = 3) -> dict[str, Listing]:
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subjects:
        raise DataError(f"{root} has no subject folders; expected {LAYOUT}")
    sources, labels, owners = [], [], []
    for subject in subjects:
        for cls, sequence in class_folders(subject, LAYOUT).items():
            if cls not in CLASSES:
                raise DataError(f"{sequence}: Oulu-CASIA has no {cls.lower()} sequences; expected {LAYOUT}")
            frames = sorted(image_files(sequence)[0], key=_frame_order)
            if not frames:
                raise DataError(f"{sequence} holds no frames: an empty sequence; add its frames or remove the folder")
            peak = frames[-peak_frames:]
            sources += [str(p) for p in peak]
            labels += [CLASSES.index(cls)] * len(peak)
            owners += [subject.name] * len(peak)
    return subject_folds("oulu", sources, labels, owners, CLASSES, fold, folds)


def _frame_order(path: Path) -> tuple[int, str]:
    """Frame number when the name has one (9.jpeg before 10.jpeg), else the name."""
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)
