"""medseg's lesion-wise and legacy BraTS metrics side by side with the challenge's own evaluation code.

    git clone https://github.com/rachitsaluja/BraTS-2023-Metrics /tmp/BraTS-2023-Metrics
    git -C /tmp/BraTS-2023-Metrics checkout 43c9052    # the version compared (top-level metrics.py)
    python3.10 -m venv /tmp/brats-ref && /tmp/brats-ref/bin/pip install -r /tmp/BraTS-2023-Metrics/requirements.txt
                                                       # its own pins: pandas 1.3.4 (1.5 and 2.x fail in its replace)
    python benchmarks/compare_lesionwise.py --reference /tmp/BraTS-2023-Metrics \
        --reference-python /tmp/brats-ref/bin/python --labels DATA_DIR --pred PRED_DIR [--perturbed 4] [--seed 0]

DATA_DIR holds BraTS case folders with their seg files (2021 or 2023 codes), PRED_DIR one `<case_id>.nii.gz` per
case (what `medseg predict` writes). Besides the real predictions, `--perturbed N` adds N seeded variants per case
made from its ground truth (blobs near and far, a missed component, grown/shrunk ET, a shift), each scored both
ways round, so the ground truth also has many close pieces (the rule that merges them is exercised). Every pair
goes through both implementations from the same files: the reference's `get_LesionWiseResults(..., "BraTS-GLI")`
and medseg's `lesion_wise` / `region_metrics`. Prints per pair and region the lesion-wise Dice / HD95 and the
legacy Dice / HD95 of both, then the largest differences (also of the lesion counts: detected, false-positive,
missed). The reference is AGPL and not part of medseg: it
runs from your checkout, in its own interpreter. Its HD95 comes from DeepMind's surface-distance code, medseg's
from MONAI: those differ slightly by definition (surfel-weighted percentile); the Dice values must agree exactly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.data.layouts import detect_cases
from medseg.evaluation.lesionwise import lesion_wise
from medseg.evaluation.metrics import region_metrics
from medseg.pipelines import get_task
from medseg.pipelines.brats import LABELS_2023, SCHEME
from medseg.transforms.labels import labels_to_regions

REGIONS = ("WT", "TC", "ET")


# Runs in the reference's interpreter: argv[1] is the checkout, stdin a JSON list of (prediction, truth) files.
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import metrics
cols = ("LesionWise_Score_Dice", "LesionWise_Score_HD95", "Legacy_Dice", "Legacy_HD95", "Num_TP", "Num_FP", "Num_FN")
out = []
for pred, gt in json.load(sys.stdin):
    df = metrics.get_LesionWiseResults(pred, gt, "BraTS-GLI").set_index("Labels")
    out.append({r: [float(df.loc[r, c]) for c in cols] for r in ("WT", "TC", "ET")})
print(json.dumps(out))
"""


def run_reference(python: str, checkout: Path, files: list[tuple[Path, Path]]) -> list[dict]:
    done = subprocess.run(
        [python, "-c", DRIVER, str(checkout)],
        input=json.dumps([[str(p), str(g)] for p, g in files]),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the reference failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def to_2023(labels: np.ndarray, et_code: int) -> np.ndarray:
    """The reference knows the 2023 codes only (ET = 3)."""
    out = labels.astype(np.uint8)
    out[labels == et_code] = 3
    return out


def sphere(shape, centre, radius) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def perturb(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible imperfect prediction from the ground truth (2023 codes)."""
    pred = gt.copy()
    tumour = np.argwhere(gt > 0)
    lo, hi = np.maximum(tumour.min(0) - 25, 0), np.minimum(tumour.max(0) + 25, np.array(gt.shape) - 1)
    surface = np.argwhere(gt > 0)[:: max(1, len(tumour) // 500)]
    for _ in range(rng.integers(0, 25)):  # far blobs: false positives of every size
        pred[sphere(gt.shape, rng.integers(lo, hi + 1), rng.uniform(0.5, 4))] = rng.choice([1, 2, 3])
    for _ in range(rng.integers(0, 8)):  # near blobs: 1-8 voxels off the tumour, matched or not by the dilation
        centre = surface[rng.integers(len(surface))] + rng.integers(-8, 9, size=3)
        pred[sphere(gt.shape, centre, rng.uniform(0.5, 2.5))] = rng.choice([1, 2, 3])
    if rng.random() < 0.5:  # one component of a region missed
        cc, n = ndimage.label(pred == rng.choice([1, 3]), np.ones((3, 3, 3)))
        if n:
            pred[cc == rng.integers(1, n + 1)] = 0
    if rng.random() < 0.5:  # ET grown or shrunk by a voxel
        et = pred == 3
        op = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
        pred[et] = 1
        pred[op(et)] = 3
    if rng.random() < 0.3:
        pred = np.roll(pred, int(rng.integers(-3, 4)), axis=int(rng.integers(3)))
    return pred


def ours(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, tuple[float, ...]]:
    p, g = (labels_to_regions(x, SCHEME, LABELS_2023).astype(bool) for x in (pred, gt))
    legacy = region_metrics(p, g, SCHEME.region_names, spacing, empty_hd95_mm=374.0, metrics=("dice", "hd95"))
    out = {}
    for i, name in enumerate(SCHEME.region_names):
        lw = lesion_wise(p[i], g[i], spacing)
        counts = (lw.detected, lw.false_positives, lw.missed)
        out[name] = (lw.dice, lw.hd95, legacy[f"dice_{name.lower()}"], legacy[f"hd95_{name.lower()}"], *counts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="checkout of rachitsaluja/BraTS-2023-Metrics")
    ap.add_argument("--reference-python", default=sys.executable, help="an interpreter with the reference's deps")
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--pred", type=Path, required=True)
    ap.add_argument("--perturbed", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    task = get_task("brats")
    _, cases = detect_cases(args.labels, task.layouts)
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lesionwise_"))
    names, scores, files = [], [], []
    for case in cases:
        gt_img = nib.load(case.label)
        et_code = case.label_map["enhancing"]
        gt = to_2023(np.asarray(gt_img.dataobj), et_code)
        pred_file = args.pred / f"{case.id}.nii.gz"
        pairs = []
        if pred_file.exists():
            pairs.append(("prediction", to_2023(np.asarray(nib.load(pred_file).dataobj), et_code), gt))
        for k in range(args.perturbed):
            variant = perturb(gt, rng)
            pairs += [(f"perturbed {k}", variant, gt), (f"perturbed {k} reversed", gt, variant)]
        spacing = [float(s) for s in np.linalg.norm(gt_img.affine[:3, :3], axis=0)]
        for name, pred, truth in pairs:
            pair_files = []
            for role, data in (("pred", pred), ("gt", truth)):
                pair_files.append(work / f"{len(files)}_{role}.nii.gz")
                nib.save(nib.Nifti1Image(data, gt_img.affine, gt_img.header), pair_files[-1])
            files.append(tuple(pair_files))
            names.append(f"{case.id} {name}")
            scores.append(ours(pred, truth, spacing))
            print(f"scored {names[-1]}", file=sys.stderr, flush=True)
    reference = run_reference(args.reference_python, args.reference, files)
    diffs = {k: [] for k in ("lw_dice", "lw_hd95", "dice", "hd95", "tp", "fp", "fn")}
    print(f"{'pair':44} {'region':6} {'lesion Dice ours/ref':>22} {'lesion HD95 ours/ref':>22} "
          f"{'Dice ours/ref':>16} {'HD95 ours/ref':>16}")  # fmt: skip
    for name, a, b in zip(names, scores, reference, strict=True):
        for r in REGIONS:
            for key, x, y in zip(diffs, a[r], b[r], strict=True):
                diffs[key].append((abs(x - y), f"{name} {r}"))
            print(f"{name:44} {r:6} {a[r][0]:10.4f}/{b[r][0]:<11.4f} {a[r][1]:10.2f}/{b[r][1]:<11.2f}"
                  f" {a[r][2]:7.4f}/{b[r][2]:<8.4f} {a[r][3]:7.2f}/{b[r][3]:<8.2f}")  # fmt: skip
    print(f"\n{len(names)} pairs x {len(REGIONS)} regions compared (spacing from each header)")
    for key, values in diffs.items():
        worst, where = max(values)
        same = sum(d < 1e-6 for d, _ in values)
        print(f"{key:8} identical {same}/{len(values)}  mean |diff| {np.mean([d for d, _ in values]):.4f}"
              f"  max |diff| {worst:.4f} ({where})")  # fmt: skip


if __name__ == "__main__":
    main()
