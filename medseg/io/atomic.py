"""Atomic file writes: a reader never sees a half-written output, whatever kills the writer."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates 0600 files; outputs get the permissions a plain open() would give (0666 minus the umask).
# Read once at import, while single-threaded: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds.

    The temporary name keeps the final suffix (e.g. `.nii.gz`) so writers that dispatch on it work.
    """
    final = Path(final)
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


def atomic_write_text(final: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
