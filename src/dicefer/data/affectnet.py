"""`affectnet:PATH`: AffectNet's manually annotated set, training.csv and validation.csv beside
Manually_Annotated_Images/ (or images directly under PATH).

CSV columns: subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal. Expressions 0..7 are Neutral, Happy, Sad, Surprise, Fear, Disgust,
Anger, Contempt; 8..10 (None, Uncertain, No-Face) are not expressions and are left out. The
validation set is AffectNet's evaluation set (there is no public test set).
"""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from dicefer.data import numbers
from dicefer.data.base import canonical_class, class_list
from dicefer.data.images import UnreadableImage, read_image
from dicefer.data.listing import DataError, Listing, csv_rows, files_fingerprint

CSVS = {"train": ("training.csv", "Manually_training.csv"), "val": ("validation.csv", "Manually_validation.csv")}
LAYOUT = "training.csv and validation.csv (AffectNet's manual annotations) and Manually_Annotated_Images/"
CODES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
NOT_EXPRESSIONS = (8, 9, 10)
BOX = ("face_x", "face_y", "face_width", "face_height")
log = logging.getLogger("dicefer")


def load(root: Path, contempt: bool = True, face_box: bool = True) -> dict[str, Listing]:
    images = root / "Manually_Annotated_Images" if (root / "Manually_Annotated_Images").is_dir() else root
    classes = class_list(contempt)
    out = {}
    for split, names in CSVS.items():
        path = next((root / n for n in names if (root / n).is_file()), None)
        if path is None:
            raise DataError(f"{root / names[0]} does not exist; expected {LAYOUT}")
        out[split] = _read_csv(path, images, classes, face_box, f"affectnet {split}")
    return out


def _read_csv(path: Path, images: Path, classes: tuple[str, ...], face_box: bool, name: str) -> Listing:
    sources, labels, boxes = [], [], []
    left_out = 0
    reader = csv_rows(path)
    header = next(reader, (1, []))[1]
    needed = {"subDirectory_filePath", "expression", *BOX}
    if not needed <= set(header):
        raise DataError(f"{path}, line 1: missing columns {', '.join(sorted(needed - set(header)))}; expected {LAYOUT}")
    for line, fields in reader:
        where = f"{path}, line {line}"
        if len(fields) < len(header):
            raise DataError(f"{where}: {len(fields)} fields, fewer than the header's {len(header)}")
        row = dict(zip(header, fields))
        code = numbers.integer(row["expression"], where, "expression", 0, NOT_EXPRESSIONS[-1],
                               "AffectNet's are 0..10")
        box = tuple(int(numbers.decimal(row[k], where, k)) for k in BOX)
        if code in NOT_EXPRESSIONS or canonical_class(CODES[code]) not in classes:
            left_out += 1
            continue
        sources.append(str(images / row["subDirectory_filePath"]))
        labels.append(classes.index(canonical_class(CODES[code])))
        boxes.append(box)
    if left_out:
        log.info("%s: left out %d images labelled none, uncertain, no-face%s", name, left_out,
                 "" if len(classes) > 7 else " or contempt (data.contempt=false)")

    def read(i: int) -> Image.Image:
        image = read_image(Path(sources[i]))
        return _crop(image, boxes[i]) if face_box else image

    fingerprint = files_fingerprint(sources) + f" face_box={face_box} " + files_fingerprint([path])
    return Listing(name, sources, labels, None, classes, read=read, fingerprint=fingerprint)


def _crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    x, y, w, h = box
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image.width + 1 or y + h > image.height + 1:
        raise UnreadableImage(f"face box {box} lies outside the {image.width}x{image.height} image "
                              "(already cropped? then set data.face_box=false)")
    return image.crop((x, y, x + w, y + h))
