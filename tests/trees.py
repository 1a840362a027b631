"""Tiny dataset trees for the tests, written from generated pixels (never real faces)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def face(seed: int, size: int = 24, mode: str = "L") -> Image.Image:
    """A random image whose pixels depend only on `seed`."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L" if mode == "L" else "RGB")


def write(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def class_tree(root: Path, splits: dict[str, dict[str, int]], size: int = 24) -> Path:
    """root/<split>/<class>/<n>.png with the given number of images per class."""
    seed = 0
    for split, classes in splits.items():
        for cls, n in classes.items():
            for k in range(n):
                seed += 1
                write(root / split / cls / f"{cls}_{k}.png", face(seed, size))
    return root


def rafdb_tree(root: Path, lines: list[str], aligned: bool = True) -> Path:
    """basic/EmoLabel/list_patition_label.txt with `lines`, and an image for each listed name."""
    basic = root / "basic"
    (basic / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for k, line in enumerate(lines):
        name = line.split()[0]
        stem = name.rsplit(".", 1)[0]
        write(basic / "Image" / "aligned" / f"{stem}_aligned.jpg", face(k, 20, "RGB"))
        write(basic / "Image" / "original" / name, face(1000 + k, 30, "RGB"))
    return basic


def fer_csv(path: Path, rows: list[tuple[int, str, np.ndarray | str]]) -> Path:
    """fer2013.csv rows (emotion, Usage, 48x48 pixels or a raw pixel string)."""
    lines = ["emotion,pixels,Usage"]
    for emotion, usage, pixels in rows:
        text = pixels if isinstance(pixels, str) else " ".join(map(str, pixels.ravel().tolist()))
        lines.append(f"{emotion},{text},{usage}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
