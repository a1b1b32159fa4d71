"""The peak memory medseg reports is its own process's, not the high-water mark of the process that started it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medseg.memory import peak_rss_bytes

MB = 2**20


def test_peak_rss_of_a_child_excludes_its_parents_memory():
    held = np.ones(800 * MB, dtype=np.uint8)  # the parent's resident high-water mark rises above 800 MB
    child = (
        "import numpy as np; from medseg.memory import peak_rss_bytes; "
        "a = np.ones(200 * 2**20, dtype=np.uint8); print(peak_rss_bytes())"
    )
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    peak = int(run.stdout)
    assert 200 * MB <= peak < 500 * MB  # its own 200 MB array plus the interpreter; ru_maxrss would say > 800 MB
    assert peak_rss_bytes() >= held.nbytes


KEEP = """
import resource, torch
from medseg.memory import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
for i in range(20):
    if i == 1:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.ones(64 * 2**20, dtype=torch.uint8)  # a case-sized tensor, allocated and freed case after case
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_kept_freed_memory_is_reused_without_page_faults():
    """Without it, each 64 MB tensor is mapped, faulted in page by page (zeroed by the kernel) and unmapped again.
    (numpy asks for huge pages on its own, torch's CPU allocator does not.)"""
    faults = {
        keep: int(subprocess.run([sys.executable, "-c", KEEP.format(keep=keep)], capture_output=True, check=True,
                                 text=True).stdout)
        for keep in (False, True)
    }  # fmt: skip
    assert faults[False] > 10 * 16384  # most of the 19 tensors are faulted in again, 16384 pages each
    assert faults[True] < faults[False] / 2


def test_every_medseg_process_keeps_freed_memory(monkeypatch):
    """Set in the CLI entry point, before any command: training and validation allocate activations step after
    step as prediction does (an fp32 sliding window took 1.8x as long without it, benchmarks/RESULTS.md)."""
    import medseg.cli.app as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(sys, "argv", ["medseg", "--version"])
    try:
        cli.main()
    except SystemExit as done:
        assert done.code in (0, None)
    assert calls == ["kept"]
