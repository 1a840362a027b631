"""`ckplus:PATH`: CK+ as released (cohn-kanade-images/ + Emotion/) or as CK+48/<class>/ folders.

Released layout: each labelled sequence's last data.peak_frames frames take its label from
Emotion/S005/001/S005_001_00000011_emotion.txt (1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy,
6 sadness, 7 surprise). The subject (S005) comes from the file name and defines the folds.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from dicefer.data import folder, numbers
from dicefer.data.base import canonical_class, class_list
from dicefer.data.folds import subject_folds
from dicefer.data.listing import DataError, Listing, image_files, read_text

LAYOUT = ("CK+'s cohn-kanade-images/S005/001/*.png with Emotion/S005/001/*_emotion.txt, "
          "or one folder per class holding files named like S005_001_00000011.png (CK+48)")
CODES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # emotion files' 1..7
SUBJECT = re.compile(r"^(S\d+)_")
log = logging.getLogger("dicefer")


def load(root: Path, fold: int = 1, folds: int = 10, contempt: bool = True,
         peak_frames: int = 3) -> dict[str, Listing]:
    if (root / "Emotion").is_dir() and (root / "cohn-kanade-images").is_dir():
        sources, classes_of = _sequences(root, peak_frames)
    else:
        sources, classes_of = _class_folders(root)
    classes = class_list(contempt)
    kept = [i for i, c in enumerate(classes_of) if c in classes]
    if len(kept) < len(sources):
        log.info("ckplus: dropped %d contempt images (data.contempt=false)", len(sources) - len(kept))
    subjects = []
    for i in kept:
        match = SUBJECT.match(Path(sources[i]).name)
        if match is None:
            raise DataError(f"{sources[i]}: no subject id in the file name; expected names like S005_001_00000011.png")
        subjects.append(match.group(1))
    return subject_folds("ckplus", [sources[i] for i in kept], [classes.index(classes_of[i]) for i in kept], subjects,
                         classes, fold, folds)


def _class_folders(root: Path) -> tuple[list[str], list[str]]:
    if (root / "CK+48").is_dir():
        root = root / "CK+48"
    listing = folder.listing_of(folder.class_folders(root, LAYOUT), "ckplus", class_list(True))
    return listing.sources, [listing.classes[y] for y in listing.expression]


def _sequences(root: Path, peak_frames: int) -> tuple[list[str], list[str]]:
    sources, classes = [], []
    for label_file in sorted((root / "Emotion").glob("*/*/*_emotion.txt")):
        code = numbers.whole_number(read_text(label_file), f"{label_file}, line 1", "emotion code", 1, len(CODES),
                                    f"CK+ codes are 1..7 ({', '.join(CODES)})")
        sequence = label_file.parent.relative_to(root / "Emotion")
        frames_dir = root / "cohn-kanade-images" / sequence
        frames = image_files(frames_dir)[0] if frames_dir.is_dir() else []
        if not frames:
            raise DataError(f"{label_file} labels sequence {sequence}, but {frames_dir} holds no frames")
        cls = canonical_class(CODES[code - 1])
        sources += [str(p) for p in frames[-peak_frames:]]
        classes += [cls] * len(frames[-peak_frames:])
    if not sources:
        raise DataError(f"{root / 'Emotion'} holds no */*/*_emotion.txt label files; expected {LAYOUT}")
    return sources, classes

