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


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for the next case instead of returning it to the system.

    By default glibc serves every block above 128 KiB with its own mmap and unmaps it when freed, so each case's
    volumes are faulted in and zeroed by the kernel again: a third of a case's CPU time on the 2-core CPU
    (benchmarks/RESULTS.md, "Folder throughput"). Blocks up to 32 MiB (glibc's ceiling) now come from the heap,
    which is no longer trimmed; peak memory is unchanged, the resident size stays near it between cases.
    Returns False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (present in glibc only)
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(-4, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
