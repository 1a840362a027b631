"""`folder:PATH`: train/, optional val/, test/, one sub-folder per class named after the expression.

Class folder names are matched case-insensitively to the canonical classes (happy, Happiness,
HAPPY -> Happiness). Also the reader of every dataset shipped as class folders (FER2013, CK+48).
"""
from __future__ import annotations

import logging
from pathlib import Path

from dicefer.data.base import CLASSES, CONTEMPT, canonical_class, class_list
from dicefer.data.listing import DataError, Listing, image_files, require_dir

LAYOUT = "train/, optional val/ and test/, each with one sub-folder per class (for example train/happy/*.jpg)"
SPLITS = ("train", "val", "test")
log = logging.getLogger("dicefer")


def load(root: Path, contempt: bool = True, name: str = "folder") -> dict[str, Listing]:
    """{split: Listing} for every split folder present; train/ is required."""
    require_dir(root / "train", LAYOUT)
    present = [s for s in SPLITS if (root / s).is_dir()]
    folders = {s: class_folders(root / s, LAYOUT) for s in present}
    keep_contempt = contempt and any(CONTEMPT in f for f in folders.values())
    return {s: listing_of(folders[s], f"{name} {s}", class_list(keep_contempt)) for s in present}


def class_folders(root: Path, layout: str) -> dict[str, Path]:
    """{canonical class: its folder} for the sub-folders of `root`; unknown names and duplicates are errors."""
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cls = canonical_class(folder.name)
        if cls is None:
            valid = ", ".join(c.lower() for c in (*CLASSES, CONTEMPT))
            raise DataError(f"{folder}: '{folder.name}' is not an expression class; class folders are named (any case) {valid}")
        if cls in found:
            raise DataError(f"{found[cls]} and {folder} are both class {cls}: keep one folder per class")
        found[cls] = folder
    if not found:
        raise DataError(f"{root} has no class sub-folders; expected {layout}")
    return found


def listing_of(folders: dict[str, Path], name: str, classes: tuple[str, ...]) -> Listing:
    """All images of the class folders; contempt dropped (with a notice) when `classes` has no contempt."""
    sources: list[str] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for cls, folder in folders.items():
        images, others = image_files(folder)
        ignored += others
        if not images:
            raise DataError(f"{folder} holds no images: an empty class; add images or remove the folder")
        if cls not in classes:
            log.info("%s: dropped %d %s images (data.contempt=false)", name, len(images), cls.lower())
            continue
        sources += [str(p) for p in images]
        labels += [classes.index(cls)] * len(images)
    if ignored:
        log.warning("%s: ignored %d entries that are not image files (other files, folders, broken links), e.g. %s",
                    name, len(ignored), ignored[0])
    return Listing(name, sources, labels, None, classes)
