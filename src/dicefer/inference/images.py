"""Any image a user hands us, as a uint8 array: (H, W) grayscale or (H, W, 3) RGB.

Photos arrive rotated by EXIF, with alpha, palettes, 16 bits or as files that only claim to be
images; everything downstream (detection, preprocessing) then deals with two layouts only.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dicefer.errors import UserError

ImageLike = str | Path | Image.Image | np.ndarray


class UnreadableImage(UserError):
    """A file that is not an image, is damaged, or is refused as a decompression bomb."""


def load_image(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array (RGB, not OpenCV's BGR) -> uint8 (H, W) or (H, W, 3)."""
    if isinstance(image, np.ndarray):
        return from_array(image)
    if isinstance(image, Image.Image):
        return from_pil(image)
    return read_file(Path(image))


def read_file(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; a bomb is a bomb at either size.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return from_pil(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UnreadableImage(f"{path}: refused, too many pixels for an image (a decompression bomb?): {err}") from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or damaged files, unreadable paths
        raise UnreadableImage(f"{path}: cannot read ({err})") from None


def from_pil(img: Image.Image) -> np.ndarray:
    """Upright (EXIF orientation applied), alpha composited on white, 16-bit scaled to 8."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # 16-bit PNG and TIFF: PIL's own convert("L") would clip, not scale
        return _scaled(np.asarray(img), 65535)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "L") else "RGB")
    return np.asarray(img)


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


def _scaled(a: np.ndarray, top: int) -> np.ndarray:
    return (np.clip(a, 0, top) * (255 / top)).round().astype(np.uint8)
