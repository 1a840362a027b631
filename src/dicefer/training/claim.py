"""A run folder as `dicefer train` holds it: the lock held while it trains, and what a fresh start
may replace (a run's own files, by name; see run.py for the format).

A folder holding anything else is not a run folder, and nothing in it is removed: `--overwrite`
deletes a run's own files, never a user's. The lock is an OS lock (fcntl.flock) on `.lock`, so a
second `train` on the folder fails at once, and a lock left by a killed process is gone with it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from dicefer.errors import RunError
from dicefer.run import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    PARTIAL,
    PREVIOUS,
    REPORT,
    REPORT_FILES,
    written_by_a_run,
)

LOCK = ".lock"


def foreign_files(folder: Path) -> list[str]:
    """What in `folder` a run never writes: other names, and run-file names a run did not write."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name == REPORT and entry.is_dir():
            foreign += [f"{REPORT}/{f.name}" for f in sorted(entry.iterdir())
                        if not (f.is_file() and any(fnmatch(f.name, p) for p in REPORT_FILES) and written_by_a_run(f))]
        elif name == LOCK or any(fnmatch(name, p) for p in PARTIAL):
            continue
        elif name not in (CONFIG, METRICS, MODEL, CHECKPOINT, PREVIOUS) or not entry.is_file() or not written_by_a_run(entry):
            foreign.append(name + "/" * entry.is_dir())
    return foreign


def clear(folder: Path) -> None:
    """Remove exactly what a run writes (checked first with foreign_files), keeping the lock."""
    for name in (CONFIG, METRICS, MODEL, CHECKPOINT, PREVIOUS):
        (folder / name).unlink(missing_ok=True)
    for pattern in PARTIAL:
        for partial in folder.glob(pattern):
            partial.unlink()
    report = folder / REPORT
    if report.is_dir():
        for pattern in REPORT_FILES:
            for f in report.glob(pattern):
                f.unlink()
        report.rmdir()


@contextmanager
def claimed(folder: Path, resume: bool, overwrite: bool = False) -> Iterator[None]:
    """Hold `folder` for one training process. A fresh start needs an empty folder, or a run
    folder and `overwrite`; if it fails before its first checkpoint, what it wrote is removed
    (the folder too, when it made it), so that the corrected command starts clean."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"--out {folder} is a file, not a folder") from None
    except OSError as err:
        raise RunError(f"--out {folder}: cannot create the folder ({err.strerror or err})") from None
    locked_before = (folder / LOCK).exists()
    try:
        lock = open(folder / LOCK, "a+")
    except OSError as err:
        if created:
            folder.rmdir()
        raise RunError(f"--out {folder}: cannot write in it ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise RunError(f"{folder} is in use: another dicefer train (pid {holder}) is training into it; "
                           "wait for it to finish, or choose another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        if not resume:
            try:
                _check_fresh(folder, overwrite)
            except RunError:  # a refused start leaves nothing behind: no lock, no folder it made
                if not locked_before:
                    (folder / LOCK).unlink(missing_ok=True)
                if created and not any(folder.iterdir()):
                    folder.rmdir()
                raise
        try:
            yield
        except BaseException:
            if not resume and not any((folder / n).exists() for n in (CHECKPOINT, PREVIOUS, MODEL)):
                _undo_start(folder, created)
            raise
    finally:
        lock.close()


def _check_fresh(folder: Path, overwrite: bool) -> None:
    contents = [e.name for e in folder.iterdir() if e.name != LOCK]
    if not contents:
        return
    foreign = foreign_files(folder)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise RunError(f"{folder} is not a dicefer run folder: it holds {shown}, which dicefer train never writes; "
                       "choose another --out (--overwrite removes only a run's own files)")
    if not overwrite:
        raise RunError(f"run folder {folder} already exists and holds a run; continue it with --resume {folder}, "
                       "replace it with --overwrite, or choose another --out")
    clear(folder)


def _undo_start(folder: Path, created: bool) -> None:
    """Remove what a start that failed before its first checkpoint wrote: never a user's file."""
    for name in (CONFIG, METRICS):
        if (folder / name).is_file() and written_by_a_run(folder / name):
            (folder / name).unlink()
    if created and {e.name for e in folder.iterdir()} <= {LOCK}:
        shutil.rmtree(folder)
