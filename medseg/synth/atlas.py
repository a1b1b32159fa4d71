"""The real brain anatomy synthetic cases are built on: the MNI ICBM152 2009c template that nilearn's wheel ships.

nilearn is not imported (its import pulls scikit-learn and pandas, seconds for three files): the package is only
located, and its three NIfTI files (T1, grey- and white-matter probability, 1 mm, RAS) are read with nibabel.
Nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError

_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}


@dataclass(frozen=True)
class Atlas:
    """Tissue maps on the template's 1 mm RAS grid (X, Y, Z), float32 in [0, 1].

    `t1` is the template T1 scaled so white matter is ~1; `csf` is what the brain mask holds beyond grey and white
    matter (ventricles, sulci); `brain` is the template's own skull-stripped mask; `depth` is the distance in mm
    from each brain voxel to the brain's outer surface (deep CSF = ventricles, shallow = sulci).
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    depth: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)


def atlas_dir() -> Path:
    """Folder of nilearn's bundled template files; a one-line error if nilearn is not installed."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise MedsegError(
            "the anatomy-based generator needs nilearn's bundled MNI template",
            hint="pip install nilearn (or use --kind simple)",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [f for f in _FILES.values() if not (folder / f).is_file()]
    if missing:
        raise MedsegError(f"nilearn ships without {missing[0]}", path=str(folder), hint="reinstall nilearn >= 0.10")
    return folder


def load_atlas() -> Atlas:
    """Read the template (~2 s with the depth map); callers that synthesise many cases load it once and pass it."""
    folder = atlas_dir()
    maps = {}
    for name, file in _FILES.items():
        img = nib.as_closest_canonical(nib.load(str(folder / file)))
        maps[name] = np.asarray(img.dataobj, dtype=np.float32)
    brain = maps["t1"] > 0
    wm_t1 = float(np.median(maps["t1"][maps["wm"] > 0.9 * maps["wm"].max()]))
    gm = maps["gm"] / 255.0 * brain
    wm = maps["wm"] / 255.0 * brain
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    depth = ndimage.distance_transform_edt(ndimage.binary_fill_holes(brain)).astype(np.float32)
    return Atlas(t1=maps["t1"] / wm_t1, gm=gm, wm=wm, csf=csf, brain=brain, depth=depth)


@functools.cache
def shared_atlas() -> Atlas:
    """The template loaded once per process (read-only arrays): generator workers each call this."""
    atlas = load_atlas()
    for arr in (atlas.t1, atlas.gm, atlas.wm, atlas.csf, atlas.brain, atlas.depth):
        arr.setflags(write=False)
    return atlas
