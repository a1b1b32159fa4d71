"""This process's own peak resident memory.

`getrusage(RUSAGE_SELF).ru_maxrss` is not that: Linux carries the high-water mark across `fork` and `exec`, so a
`medseg predict` started from a 2 GB Python process (a notebook, pytest, a benchmark driver) reports at least 2 GB.
`VmHWM` in /proc/self/status is the peak of this process's own address space; other systems fall back to
ru_maxrss (KiB on Linux, bytes on macOS).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """Peak resident set size of this process, in bytes."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024
