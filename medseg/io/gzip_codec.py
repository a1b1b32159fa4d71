"""gzip for `.nii.gz` with ISA-L (`isal`, from PyPI) when it is installed, the standard library's zlib otherwise.

Both produce and read standard gzip streams: the decompressed bytes are the same whichever wrote them. ISA-L inflate
is about 2x faster than zlib on a BraTS volume, its level-1 deflate over 10x faster than zlib's level 1 (the level
nibabel writes), at a similar size for label masks (benchmarks/RESULTS.md, "Folder throughput").
"""

from __future__ import annotations

import gzip

try:
    from isal import igzip as _gzip

    BACKEND = "isal"
except ImportError:  # a platform without isal wheels
    _gzip = gzip
    BACKEND = "zlib"

LEVEL = 1  # nibabel's default for .gz: speed over a few percent of size


def decompress(data: bytes) -> bytes:
    """All members of a gzip stream; raises EOFError / OSError (BadGzipFile) / zlib-style errors on bad data."""
    return _gzip.decompress(data)


def compress(data: bytes) -> bytes:
    return _gzip.compress(data, compresslevel=LEVEL)
