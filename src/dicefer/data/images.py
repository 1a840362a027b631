"""Decoding one face image with PIL into uint8 pixels of a fixed size, whatever the file's mode.

Grayscale, palette, RGBA, CMYK and 16-bit files are converted, not rejected; a file that cannot
be decoded raises UnreadableImage with a short reason, which the cache counts and reports.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class UnreadableImage(Exception):
    """An image that cannot be decoded; str(err) says why in a few words."""


def read_image(path: Path) -> Image.Image:
    """Open and fully decode `path` (a truncated file fails here, not later in training)."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file")
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
        return ImageOps.exif_transpose(image)  # upright, as predict reads photos
    except FileNotFoundError:
        raise UnreadableImage("file does not exist") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"cannot be decoded ({err})") from None


def decode(read: Callable[[], Image.Image], size: int, grayscale: bool) -> np.ndarray:
    """`read()`'s image as `to_array` gives it. PIL fails in many ways (a LAB TIFF cannot become L,
    a damaged header breaks its struct parsing): any of them while reading or converting is an
    UnreadableImage, so that the file is skipped like any other unreadable one."""
    try:
        return to_array(read(), size, grayscale)
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, ZeroDivisionError, struct.error,
            Image.DecompressionBombError) as err:
        raise UnreadableImage(f"cannot be decoded ({err.__class__.__name__}: {err})") from None


def to_array(image: Image.Image, size: int, grayscale: bool) -> np.ndarray:
    """uint8 (size, size) if grayscale else (size, size, 3); non-square images are resized, not cropped."""
    return resized(np.asarray(_eight_bit(image).convert("L" if grayscale else "RGB"), dtype=np.uint8), size)


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> (size, size[, 3]): the one resize of every face, for training,
    evaluation and predict alike (PIL's bilinear, antialiased when shrinking)."""
    if pixels.shape[:2] == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def _eight_bit(image: Image.Image) -> Image.Image:
    """An image in an 8-bit mode: 16-bit scaled (not clipped), transparency flattened onto white."""
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
    if image.mode == "F":
        return Image.fromarray(np.asarray(image).round().clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image
