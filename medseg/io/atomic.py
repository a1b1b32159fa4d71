"""Atomic file writes: a reader never sees a half-written output, whatever kills the writer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds.

    The temporary name keeps the final suffix (e.g. `.nii.gz`) so writers that dispatch on it work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name.split('.')[0]}.", suffix=f".part{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_text(final: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
