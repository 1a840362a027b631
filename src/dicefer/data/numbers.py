"""The one place label and pixel files turn text into numbers.

Python's own parsers accept more than these files ever hold ('²'.isdigit() is True, int('١')
is 1, float('nan') is a float) and fail in ways that are not the user's to read (OverflowError,
a ValueError without a file name). Here only ASCII decimals pass; anything else is a DataError
that names the file, the line and what was expected.
"""
from __future__ import annotations

import math
import re

import numpy as np

from dicefer.data.listing import DataError

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # int() refuses 4300+ digits
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PIXELS = re.compile(r"[0-9]{1,3}( [0-9]{1,3})*")


def integer(text: str, where: str, what: str, low: int, high: int, rule: str = "") -> int:
    """`text` as an integer in low..high. `where` is "FILE, line N", `what` names the field, `rule`
    says what the file's format allows (default: a whole number low..high)."""
    text = text.strip()
    if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise DataError(f"{where}: unknown {what} {text[:40]!r}; {rule or f'expected a whole number {low}..{high}'}")
    return int(text)


def whole_number(text: str, where: str, what: str, low: int, high: int, rule: str = "") -> int:
    """Like `integer`, also accepting a decimal with nothing after the point ("3.0000000e+00", as
    CK+'s emotion files write their codes)."""
    text = text.strip()
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise DataError(f"{where}: unknown {what} {text[:40]!r}; {rule or f'expected a whole number {low}..{high}'}")
    return int(value)


def decimal(text: str, where: str, what: str) -> float:
    """A finite ASCII decimal number."""
    text = text.strip()
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {text[:40]!r} is not a number; expected a finite number")
    return value


def pixels(text: str, count: int) -> np.ndarray:
    """`count` space-separated values 0..255 as uint8, or a ValueError that says which value is wrong."""
    tokens = text.split()
    if not _PIXELS.fullmatch(" ".join(tokens)):  # the fast check; the loop only finds what to say
        k, bad = next((k, t) for k, t in enumerate(tokens) if not (t.isascii() and t.isdigit() and len(t) <= 3)) \
            if tokens else (0, "")
        raise ValueError(f"pixel value {bad[:20]!r} (number {k + 1}) is not a whole number 0..255" if tokens
                         else "no pixel values")
    values = np.array(tokens, dtype=np.int64)
    if values.max() > 255:
        position = int(values.argmax())
        raise ValueError(f"pixel value {values[position]} (number {position + 1}) is not a whole number 0..255")
    if len(values) != count:
        raise ValueError(f"expected {count} pixel values 0..255, got {len(values)} values")
    return values.astype(np.uint8)
