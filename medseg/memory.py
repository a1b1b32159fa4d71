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

    By default glibc serves every block above 128 KiB-32 MiB with its own mmap and unmaps it when freed, so each
    case's volumes, and every activation tensor of a CPU forward pass, are faulted in and zeroed by the kernel
    again: on the 2-core CPU that kernel time was half of a case's cost without a network (benchmarks/RESULTS.md,
    "Folder throughput"), and the fp32 sliding window of a BraTS case took 1.8x as long (validation during
    training, which did not set this, 2.2x). With mmap off and no trimming, freed blocks are reused; the peak is
    unchanged and the resident size stays near it (a prediction or training run holds the same few volumes and
    activations step after step). Set once per `medseg` process (`cli.app`). Returns False where libc is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018  (exists in glibc only)
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
