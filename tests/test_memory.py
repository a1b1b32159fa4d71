"""The peak memory medseg reports is its own process's, not the high-water mark of the process that started it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

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
