"""The same case written the ways other tools write it: which variants change the mask, and does predict warn?

    python benchmarks/bench_input_variants.py CASE_DIR --model best.pt [--work /tmp/variants]

CASE_DIR is one BraTS 2021 case folder with its `_seg` file. Each variant rewrites every channel: `plain`, `slope2`
(header scl_slope 2), `uint8` (rescaled to 0-255), `inter100` (header scl_inter 100: background 100), `air` (the
background set to -1000, as CT air). Prints per variant the mean region Dice (ET, TC, WT) against the case's own
labels and the warnings of `medseg predict`. A per-case z-score is blind to a global rescale but not to a shifted
background, which puts the whole volume into the foreground crop and the normalisation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.pipelines.brats import LABELS_2021, SCHEME, SUFFIXES_2021
from medseg.transforms.labels import labels_to_regions
from medseg.workflows.predict import FolderPredictor

VARIANTS = {
    "plain": lambda d: (d, None),
    "slope2": lambda d: (d.astype(np.int16), (2.0, 0.0)),
    "uint8": lambda d: (np.round(d / d.max() * 255).astype(np.uint8), None),
    "inter100": lambda d: (d.astype(np.int16), (1.0, 100.0)),
    "air": lambda d: (np.where(d == 0, -1000, d).astype(np.int16), None),
}


def write_variants(case_dir: Path, work: Path) -> None:
    cid = case_dir.name
    for name, rewrite in VARIANTS.items():
        for sfx in SUFFIXES_2021:
            img = nib.load(case_dir / f"{cid}_{sfx}.nii.gz")
            data, scaling = rewrite(np.asarray(img.dataobj))
            out = nib.Nifti1Image(data, img.affine)
            if scaling:
                out.header.set_slope_inter(*scaling)
            (work / name).mkdir(parents=True, exist_ok=True)
            nib.save(out, work / name / f"{name}_{sfx}.nii.gz")


def dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    p, t = (labels_to_regions(x, SCHEME, LABELS_2021).astype(bool) for x in (pred, truth))
    return [float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)) for a, b in zip(p, t, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case_dir", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medseg_input_variants"))
    args = ap.parse_args()
    truth = np.asarray(nib.load(args.case_dir / f"{args.case_dir.name}_seg.nii.gz").dataobj)
    write_variants(args.case_dir, args.work / "in")
    predictor = FolderPredictor.from_model(args.model, device="cpu")
    results = predictor.run(predictor.plan(args.work / "in"), args.work / "out", overwrite=True)
    print(f"{'variant':10} {'ET':>6} {'TC':>6} {'WT':>6} {'mean':>6}  warnings")
    for r in results:
        d = dice(np.asarray(nib.load(r.output).dataobj), truth)
        print(f"{r.id:10} {d[0]:6.3f} {d[1]:6.3f} {d[2]:6.3f} {np.mean(d):6.3f}  {'; '.join(r.warnings)[:90] or '-'}")


if __name__ == "__main__":
    main()
