"""Tables as CSV text (per-case metrics), shared by validation logging and `medseg evaluate`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def rows_to_csv(rows: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """CSV text with the header `fields` (written also for no rows; a row with another key is a ValueError), or
    without them the first row's keys (empty text for no rows)."""
    buf = io.StringIO()
    header = list(fields) if fields is not None else list(rows[0]) if rows else None
    if header is not None:
        writer = csv.DictWriter(buf, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
