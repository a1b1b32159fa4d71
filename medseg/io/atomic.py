"""Atomic file writes: a reader never sees a half-written output, whatever kills the writer."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import MedsegError

# mkstemp creates 0600 files; outputs get the permissions a plain open() would give (0666 minus the umask).
# Read once at import, while single-threaded: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Fail on one line when `path` cannot become the file (or, with `folder`, the folder) we write: a folder where
    a file goes, a path under a file, no permission. Creates nothing, so commands call it before their work."""
    path = Path(path)
    target = path.absolute()
    if not folder and target.is_dir():
        raise MedsegError("output path is a folder", path=str(path), hint="pass a file path (e.g. name it inside)")
    existing = target if folder else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == target else f"lies under a file ({existing})"
        raise MedsegError(f"output path {where}", path=str(path), hint="pass a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MedsegError(f"no permission to write in {existing}", path=str(path), hint="pass a path you can write to")


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds.

    The temporary name keeps the final suffix (e.g. `.nii.gz`) so writers that dispatch on it work.
    """
    final = Path(final)
    check_writable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def temporary_siblings(final: str | Path) -> list[Path]:
    """Temporary files `atomic_path(final)` left behind when its writer was killed (SIGKILL skips cleanup)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return [p for p in final.parent.glob(f".{glob.escape(final.name)}.*") if ".part" in p.name]


def remove_temporaries(final: str | Path) -> None:
    """Remove what killed writers of `final` left (`temporary_siblings`, and work folders named after those, one
    more dot ahead): a SIGKILLed export leaves its temporary graph and its quantiser's folder (megabytes)."""
    final = Path(final)
    work = [p for p in final.parent.glob(f"..{glob.escape(final.name)}.*") if ".part" in p.name]
    for p in [*temporary_siblings(final), *work]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def atomic_write_text(final: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
