"""What a dataset adapter finds before anything is decoded: one split's image sources and labels.

Adapters only read label files and folder names, so a bad layout fails in a second; decoding
(slow) happens once, in cache.py, for every adapter alike.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from dicefer.data.images import read_image
from dicefer.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class DataError(UserError):
    """A dataset that cannot be read as its spec says: the message names the path and the layout expected."""


@dataclass
class Listing:
    """One split of a dataset: per image its source, expression index into `classes`, identity or None.

    `read(i)` opens image i (default: the file `sources[i]`); `fingerprint` is what the decode
    cache hashes for the inputs (default: every file's size and modification time).
    """

    name: str
    sources: list[str]
    expression: list[int]
    identity: list[int] | None
    classes: tuple[str, ...]
    read: Callable[[int], Image.Image] | None = None
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if self.read is None:
            self.read = lambda i: read_image(Path(self.sources[i]))
        if not self.fingerprint:
            self.fingerprint = files_fingerprint(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def read_text(path: Path) -> str:
    """A label file's text; a DataError, not a traceback, when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (as Excel writes) is not part of the text
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {err.start}); expected a plain text label file") from None


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every row of a CSV file, the header included; a DataError that names
    the line for text that is not UTF-8 or not CSV (a NUL byte, an unclosed quote at the end)."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of the header
        reader = csv.reader(f)
        try:
            for row in reader:
                yield reader.line_num, row
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}, line {reader.line_num + 1}: {err}; expected UTF-8 CSV text") from None


def files_fingerprint(paths: Sequence[str | Path]) -> str:
    """A hash of every file's path, size and modification time ('missing' where there is none)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; expected {layout}")
    return path


def require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected {layout}")
    return path


def image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other entries) directly in `folder`, sorted; hidden files (.DS_Store) are neither.
    A folder named like an image, a broken link or a link loop is among the others, so it is counted
    and named like any file that is not an image."""
    images, others = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() else others).append(path)
    return images, others
