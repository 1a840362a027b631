"""Decode a Listing once into a memory-mapped .npy of resized uint8 faces, reused by every later run.

The cache key hashes the sources, their fingerprint (file sizes and times) and the preprocessing
(size, grayscale), so editing a file or changing the input size builds a new cache, never a stale
one. Unreadable images are recorded beside the array, so a cached load warns exactly as the first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dicefer.data.base import FaceSet
from dicefer.data.images import UnreadableImage, decode
from dicefer.data.listing import DataError, Listing

CACHE_VERSION = 3  # 2: EXIF orientation applied; 3: one decoder with predict (CMYK and others via RGB)
SHOWN_FAILURES = 3
log = logging.getLogger("dicefer")


def default_cache_dir() -> Path:
    """Where decoded datasets and rendered synthetic faces are kept: $DICEFER_CACHE, else ~/.cache/dicefer."""
    return Path(os.environ.get("DICEFER_CACHE") or Path.home() / ".cache" / "dicefer")


def decode_cached(listing: Listing, size: int, grayscale: bool, cache_dir: Path, strict: bool = False,
                  progress: bool = True) -> FaceSet:
    """The listing as a FaceSet of (size, size) faces; unreadable images skipped with one warning, or
    a DataError under `strict`."""
    key = _key(listing, size, grayscale)
    array_path, failed_path = cache_dir / f"faces-{key}.npy", cache_dir / f"faces-{key}.json"
    if not (array_path.is_file() and failed_path.is_file()):
        _build(listing, size, grayscale, array_path, failed_path, progress)
    images = np.load(array_path, mmap_mode="c")  # copy-on-write: writable views, the file never changes
    failed = {int(i): reason for i, reason in json.loads(failed_path.read_text()).items()}
    keep = _check_failures(listing, failed, strict)
    expression, sources = np.asarray(listing.expression), tuple(listing.sources)
    identity = None if listing.identity is None else np.asarray(listing.identity)
    if failed:
        images, expression, sources = images[keep], expression[keep], tuple(sources[i] for i in keep)
        identity = None if identity is None else identity[keep]
    return FaceSet(images, expression, identity, listing.name, listing.classes, sources)


def _key(listing: Listing, size: int, grayscale: bool) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "size": size, "grayscale": grayscale,
                                   "inputs": listing.fingerprint}).encode())
    for source in listing.sources:
        h.update(source.encode() + b"\n")
    return h.hexdigest()[:24]


def _build(listing: Listing, size: int, grayscale: bool, array_path: Path, failed_path: Path, progress: bool) -> None:
    cache_dir = array_path.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    shape = (len(listing), size, size) if grayscale else (len(listing), size, size, 3)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=array_path.stem, suffix=".tmp")
    os.close(fd)
    failed: dict[int, str] = {}
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in tqdm(range(len(listing)), desc=f"decoding {listing.name}", unit="img", disable=not progress,
                      dynamic_ncols=True, leave=False):
            try:
                out[i] = decode(lambda: listing.read(i), size, grayscale)
            except UnreadableImage as err:
                failed[i] = str(err)
        out.flush()
        del out
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        Path(tmp + ".json").write_text(json.dumps(failed))
        os.replace(tmp + ".json", failed_path)
        os.replace(tmp, array_path)  # last: a reader that finds the array also finds the failure list
    except BaseException:
        for leftover in (tmp, tmp + ".json"):
            Path(leftover).unlink(missing_ok=True)
        raise


def _check_failures(listing: Listing, failed: dict[int, str], strict: bool) -> np.ndarray:
    """Indices to keep; warns once about the others, or raises under `strict` or when none is left."""
    keep = np.array([i for i in range(len(listing)) if i not in failed], dtype=np.int64)
    if not failed:
        return keep
    first = "; ".join(f"{listing.sources[i]} ({failed[i]})" for i in sorted(failed)[:SHOWN_FAILURES])
    more = f" and {len(failed) - SHOWN_FAILURES} more" if len(failed) > SHOWN_FAILURES else ""
    what = f"{listing.name}: {len(failed)} of {len(listing)} images cannot be read: {first}{more}"
    if strict or not len(keep):
        raise DataError(what if strict else f"{what}; none is left")
    log.warning("%s; skipped them (use --strict to stop instead)", what)
    return keep
