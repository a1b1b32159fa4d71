"""User-facing errors: each carries where it happened and how to fix it, rendered as one line by the CLI."""

from __future__ import annotations

import errno
from collections.abc import Iterator


class MedsegError(Exception):
    """A mistake in the user's input, not a bug: shown as one line, exit code 1."""

    def __init__(self, message: str, *, path: str | None = None, case: str | None = None, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path
        self.case = case
        self.hint = hint

    def __str__(self) -> str:
        where = []
        if self.case:
            where.append(f"case {self.case}")
        if self.path:
            where.append(str(self.path))
        prefix = f"{', '.join(where)}: " if where else ""
        suffix = f" (fix: {self.hint})" if self.hint else ""
        return f"{prefix}{self.message}{suffix}"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """`ExceptionType: first line of its message` (cut at `limit`): a library's failure in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class ConfigError(MedsegError):
    """An experiment config that does not validate."""


class DataError(MedsegError):
    """A dataset, case or image that cannot be used."""


class LabelValuesError(DataError):
    """A label map holding values outside its label map: whose fault it is depends on who wrote the file."""


class ModelFileError(MedsegError):
    """A checkpoint or MLflow model that cannot be loaded."""


class TrackingError(MedsegError):
    """An MLflow store or run that cannot be reached."""


# Failures of the machine, not of medseg or the input: a full disk or quota, a read-only or forbidden path.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_ENVIRONMENT_HINTS = {
    errno.ENOSPC: "free space on that disk, or write the outputs elsewhere",
    errno.EDQUOT: "free space within your quota, or write the outputs elsewhere",
    errno.EROFS: "write the outputs to a writable disk",
}


def exception_chain(exc: BaseException | None, *, handled: bool = False) -> Iterator[BaseException]:
    """`exc` and the exceptions behind it: its `raise ... from` causes, and with `handled` also the exception
    being handled when each was raised (`__context__`)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or (exc.__context__ if handled else None)


def environment_failure(exc: BaseException) -> MedsegError | None:
    """One line for an OSError the machine caused (disk full, read-only, no permission), wherever it was raised
    (also behind a library's own error raised while handling it); None for any other exception (a bug keeps its
    traceback)."""
    for e in exception_chain(exc, handled=True):
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            hint = _ENVIRONMENT_HINTS.get(e.errno, "check the permissions of that path, or pass another one")
            return MedsegError(e.strerror or type(e).__name__, path=e.filename, hint=hint)
    return None
