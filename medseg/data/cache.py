"""On-disk cache of decoded, preprocessed volumes: uncompressed .npy, memory-mapped, written atomically.

Epochs after the first never gunzip. The key covers each file's path, size and mtime, the label map and
the preprocessing settings, so editing a file or changing preprocessing misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medseg.core import Case, LabelScheme
from medseg.errors import DataError
from medseg.io.nifti import read_case
from medseg.transforms.geometry import GridMeta
from medseg.transforms.preprocess import PREPROCESS_VERSION, Preprocessed, PreprocessPlan, preprocess_case


def cache_key(case: Case, scheme: LabelScheme, plan: PreprocessPlan) -> str:
    files = [*case.images, *([case.label] if case.label else [])]
    stamp = []
    for f in files:
        st = os.stat(f)
        stamp.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    payload = {
        "files": stamp,
        "channel_index": list(case.channel_index),
        "label_map": case.label_map,
        "regions": {k: list(v) for k, v in scheme.regions.items()},
        "plan": plan.to_json(),
        "version": PREPROCESS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _write_entry(entry: Path, pre: Preprocessed) -> None:
    """Write to a temporary folder, then rename it into place: atomic for a directory that does not exist yet.

    If another worker won the race, its complete entry is equivalent and ours is discarded; any other failure
    (disk full, permissions) is one clear error.
    """
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        np.save(tmp / "image.npy", pre.image)
        if pre.regions is not None:
            np.save(tmp / "regions.npy", pre.regions)
        np.save(tmp / "stats.npy", pre.stats)
        (tmp / "meta.json").write_text(json.dumps(pre.meta.to_json()))
        os.replace(tmp, entry)
    except OSError as exc:
        if not (entry / "meta.json").exists():
            raise DataError(
                f"cannot write the preprocessed-volume cache ({exc.strerror or exc})",
                path=str(entry.parent),
                hint="free disk space or point data.cache_dir at another disk",
            ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def read_entry(entry: Path) -> Preprocessed:
    regions = entry / "regions.npy"
    return Preprocessed(
        np.load(entry / "image.npy", mmap_mode="r"),
        np.load(regions, mmap_mode="r") if regions.exists() else None,
        GridMeta.from_json(json.loads((entry / "meta.json").read_text())),
        np.load(entry / "stats.npy"),
    )


def ensure_cached(case: Case, scheme: LabelScheme, cache_dir: str | Path, plan: PreprocessPlan) -> tuple[Path, bool]:
    """Cache entry folder for `case`, computing and storing it on a miss; returns (entry, hit)."""
    entry = Path(cache_dir) / f"{case.id}-{cache_key(case, scheme, plan)}"
    if (entry / "meta.json").exists():
        return entry, True
    _write_entry(entry, preprocess_case(read_case(case), case, scheme, plan))
    return entry, False


def load_preprocessed(
    case: Case, scheme: LabelScheme, cache_dir: str | Path | None, plan: PreprocessPlan
) -> tuple[Preprocessed, bool]:
    """Preprocessed case from the cache (hit: memory-mapped) or computed and stored (miss).

    Returns (preprocessed, hit). `cache_dir=None` disables caching.
    """
    if cache_dir is None:
        return preprocess_case(read_case(case), case, scheme, plan), False
    entry, hit = ensure_cached(case, scheme, cache_dir, plan)
    return read_entry(entry), hit
