"""Output paths given on the command line (train and export --out, predict --out and --annotate),
checked before any work: one line that names the problem, never a traceback, and never a file
replaced that dicefer did not write. Whether dicefer wrote a file is decided by its content (each
writer's own mark), never by its name alone."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dicefer.errors import UserError

SHOWN = 120  # characters of a user's value echoed in a message


def shown(value: object) -> str:
    """A value as an error message echoes it: repr, cut to a short prefix."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def shown_path(path: Path) -> str:
    """A path as a message shows it: as it is, or quoted with escapes where it holds a newline or other
    control character, so that the message stays one line."""
    text = str(path)
    return text if text.isprintable() else shown(text)


def output_file(path: Path, flag: str, ours: Callable[[Path], bool]) -> Path:
    """`path` may be written: its folder exists and is writable, it is not a folder, and a file
    already there was written by dicefer (`ours`), so replacing it loses nothing of the user's."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {shown_path(path)} is a folder; give a file to write in it")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {shown_path(path)}: the folder {shown_path(folder)} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {shown_path(path)}: the folder {shown_path(folder)} is not writable")
    if path.exists() and not ours(path):
        raise UserError(f"{flag} {shown_path(path)} exists and was not written by dicefer; remove it yourself or choose another name")
    return path


def output_folder(path: Path, flag: str) -> Path:
    """A folder dicefer writes files into, made if missing (with its parents)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {shown_path(path)} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {shown_path(path)}: cannot create it ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {shown_path(path)} is not writable")
    return path


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
