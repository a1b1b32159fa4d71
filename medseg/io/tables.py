"""Tables as CSV text (per-case metrics), shared by validation logging and `medseg evaluate`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text with a header from the first row's keys; empty for no rows."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
