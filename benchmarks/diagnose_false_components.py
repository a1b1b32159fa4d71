"""Where do a model's false components lie? Anatomy-based test cases are regenerated from their seed, so every
false component of a prediction can be placed on the tissue and tumour-mimic maps it was rendered from.

    python benchmarks/diagnose_false_components.py PRED_DIR --seed 1000 --cases 4 [--shape 240 240 155]

PRED_DIR holds `<case>.nii.gz` predictions (BraTS 2021 codes, as bench_quality writes them, best without
post-processing: `predictions/<label>/raw`). Per region: number of false components (touching no dilated true
lesion), their voxels, and the share of those voxels on ventricles, sulcal CSF, the brain edge (< 5 mm), vessels,
choroid plexus, periventricular caps, white-matter hyperintensities, a fat/dura rim, and grey/white matter, plus
their median distance to the tumour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.pipelines.brats import LABELS_2021, SCHEME
from medseg.synth import to_lps
from medseg.synth.anatomy import anatomy_case
from medseg.synth.atlas import shared_atlas
from medseg.transforms.labels import labels_to_regions

STRUCT = np.ones((3, 3, 3), bool)


def places(case) -> dict[str, np.ndarray]:
    """Boolean maps (LPS voxel order, as written) of the structures a false component may sit on."""
    t, m = case.tissue, case.mimics
    out = {
        "ventricle": (t.csf > 0.5) & (t.depth_mm > 25),
        "sulcal_csf": (t.csf > 0.5) & (t.depth_mm <= 25),
        "edge_5mm": t.brain & (t.depth_mm < 5),
        **{k: v for k, v in m.items()},
        "grey": t.gm >= 0.5,
        "white": t.wm >= 0.5,
        "outside": ~t.brain,
    }
    return {k: to_lps(v.astype(bool)) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", type=Path)
    p.add_argument("--seed", type=int, default=1000, help="data seed of the test cases (bench_quality: seed + 1000)")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    a = p.parse_args()
    atlas = shared_atlas()
    totals: dict[str, dict[str, float]] = {}
    for i in range(a.cases):
        cid = f"BraTS2021_{i:05d}"
        case = anatomy_case(atlas, tuple(a.shape), a.seed * 100003 + i)
        gt_label = np.zeros(case.label.shape, np.uint8)
        for code, name in ((1, "necrotic"), (2, "edema"), (3, "enhancing")):
            gt_label[case.label == code] = LABELS_2021[name]
        gt = labels_to_regions(to_lps(gt_label), SCHEME, LABELS_2021).astype(bool)
        pred = labels_to_regions(np.asarray(nib.load(a.pred_dir / f"{cid}.nii.gz").dataobj), SCHEME, LABELS_2021)
        where = places(case)
        tumour_dist = ndimage.distance_transform_edt(~gt[2], sampling=case.spacing) if gt[2].any() else None
        for r, name in enumerate(SCHEME.region_names):
            cc, n = ndimage.label(pred[r], STRUCT)
            grown = ndimage.binary_dilation(gt[r], STRUCT, iterations=3) if gt[r].any() else np.zeros_like(gt[r])
            hit = set(np.unique(cc[grown]).tolist()) - {0}
            false = np.isin(cc, [k for k in range(1, n + 1) if k not in hit])
            stats = totals.setdefault(name, {"components": 0, "voxels": 0, "dist": []} | {k: 0 for k in where})
            stats["components"] += n - len(hit)
            stats["voxels"] += int(false.sum())
            for k, mask in where.items():
                stats[k] += int((false & mask).sum())
            if tumour_dist is not None and false.any():
                stats["dist"].append(float(np.median(tumour_dist[false])))
            print(f"{cid} {name}: {n - len(hit)} false components, {int(false.sum())} voxels", flush=True)
    for name, s in totals.items():
        vox = max(1, s["voxels"])
        shares = " ".join(f"{k}={s[k] / vox:.2f}" for k in s if k not in {"components", "voxels", "dist"})
        dist = f"{np.median(s['dist']):.0f}" if s["dist"] else "-"
        print(f"false {name}: components={s['components']} voxels={s['voxels']} median_mm_from_tumour={dist} {shares}")


if __name__ == "__main__":
    main()
