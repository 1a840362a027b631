"""The one way a face image becomes pixels, for training, evaluation, predict, export and quantisation.

Any file, PIL image or array -> uint8 (H, W) grayscale or (H, W, 3) RGB: upright by its EXIF
orientation, 16-bit scaled (not clipped), transparency flattened onto white. Then, for the network,
one luma conversion (PIL's convert("L"), bit for bit) and one resize (PIL's bilinear). A file that
cannot be decoded raises UnreadableImage with a short reason: the dataset cache skips and counts
it, predict warns and goes on.
"""
from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from dicefer.errors import UserError

ImageLike = str | Path | Image.Image | np.ndarray
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
LUMA = (19595, 38470, 7471)  # ITU-R 601 in 16-bit fixed point, exactly as PIL's convert("L")
# What PIL raises, besides OSError, on a file it cannot read or convert (a LAB TIFF cannot become
# RGB, a damaged header breaks its struct parsing).
PIL_FAILURES = (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, ZeroDivisionError, struct.error,
                Image.DecompressionBombError)


class UnreadableImage(UserError):
    """An image that cannot be decoded; str(err) says why in a few words."""


def read_image(path: Path) -> Image.Image:
    """Open and fully decode `path` (a truncated file fails here, not later in training), upright."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file")
        with open(path, "rb") as f:
            return _decoded(f)
    except FileNotFoundError:
        raise UnreadableImage("file does not exist") from None


def image_from_bytes(data: bytes) -> np.ndarray:
    """An image file's bytes (an upload) -> pixels, refused for the same reasons as a file."""
    if not data:
        raise UnreadableImage("empty file")
    return pixels(lambda: _decoded(io.BytesIO(data)))


def _decoded(f: BinaryIO) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; a bomb is a bomb at either size.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(f)
            image.load()
        return ImageOps.exif_transpose(image)
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UnreadableImage(f"refused, too many pixels for an image (a decompression bomb?): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"cannot be decoded ({err})") from None


def load_image(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array (RGB, not OpenCV's BGR) -> uint8 (H, W) or (H, W, 3)."""
    if isinstance(image, np.ndarray):
        return from_array(image)
    if isinstance(image, Image.Image):
        return pixels(lambda: ImageOps.exif_transpose(image))
    path = Path(image)
    try:
        return pixels(lambda: read_image(path))
    except UnreadableImage as err:
        raise UnreadableImage(f"{path}: {err}") from None


def decode(read: Callable[[], Image.Image], size: int, grayscale: bool) -> np.ndarray:
    """A dataset's face: `read()`'s image as uint8 (size, size) if grayscale else (size, size, 3)."""
    return resized(channels(pixels(read), grayscale), size)


def pixels(read: Callable[[], Image.Image]) -> np.ndarray:
    """`read()`'s image in 8 bits, grayscale or RGB as it was; any PIL failure is an UnreadableImage."""
    try:
        image = read()
        if image.mode in SIXTEEN_BIT_MODES:
            return _scaled(np.asarray(image, dtype=np.float64), 65535)
        if image.mode == "F":
            return np.asarray(image).round().clip(0, 255).astype(np.uint8)
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(image if image.mode in ("L", "RGB") else image.convert("L" if image.mode == "1" else "RGB"))
    except UnreadableImage:
        raise
    except PIL_FAILURES as err:
        raise UnreadableImage(f"cannot be decoded ({err.__class__.__name__}: {err})") from None


def from_array(array: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 scaled from 0..65535; float taken as [0, 1]; alpha dropped (no background known)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., 0] if a.shape[2] == 1 else a[..., :3]
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise UnreadableImage(f"expected an image array (H, W) or (H, W, 1|3|4), got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    if a.dtype == np.uint16:
        return _scaled(a, 65535)
    if a.dtype.kind in "iu":  # plain integer arrays: 8-bit values unless they say otherwise
        return _scaled(a, 255 if a.max(initial=0) <= 255 else 65535)
    raise UnreadableImage(f"unsupported image array dtype {a.dtype}")


def channels(pixels: np.ndarray, grayscale: bool) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> (H, W) luma if grayscale, else (H, W, 3)."""
    if grayscale:
        return to_luma(pixels) if pixels.ndim == 3 else pixels
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


def to_luma(images: np.ndarray) -> np.ndarray:
    """uint8 RGB(A) (..., C) -> uint8 grayscale (...), bit for bit what PIL's convert("L") gives."""
    rgb = images[..., :3].astype(np.uint32)
    return ((rgb @ np.array(LUMA, dtype=np.uint32) + 0x8000) >> 16).astype(np.uint8)


def resized(pixels: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> (size, width or size[, 3]): the one resize of every face, for
    training, evaluation and predict alike (PIL's bilinear, antialiased when shrinking); not cropped."""
    width = size if width is None else width
    if pixels.shape[:2] == (size, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, size), Image.Resampling.BILINEAR))


def _scaled(a: np.ndarray, top: int) -> np.ndarray:
    return (np.clip(a, 0, top) * (255 / top)).round().astype(np.uint8)
