"""How `medseg predict` time grows with volume size and with the number of cases.

    python benchmarks/bench_scaling.py                      # 2-core CPU: transunet3d_tiny, roi 32
    python benchmarks/bench_scaling.py --model transunet3d_base --patch 128 --device cuda

Sizes: 96^3, 160^3, 240x240x155 (one case each, after a warm-up case); cases: 1, 2, 4, 8 of 96^3 (one
`predict_folder` call each). Untrained weights: timing does not depend on them, and a fixed bias makes every
case predict the same amount of foreground. Prints s/case, s per million input voxels and per foreground-box
voxel, and the least-squares fit of folder time against the number of cases.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from untrained import untrained_bundle

from medseg.data.layouts import detect_cases
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import read_case
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset
from medseg.transforms.geometry import foreground_box, to_ras

SIZES = [(96, 96, 96), (160, 160, 160), (240, 240, 155)]
COUNTS = [1, 2, 4, 8]


def timed_folder(data: Path, bundle: ModelBundle, opts: PredictOptions, work: Path) -> tuple[float, int, int]:
    """Seconds for the folder (excluding a warm-up case), input voxels and foreground-box voxels per case."""
    _, cases = detect_cases(data, LAYOUTS)
    predict_folder(cases[:1], bundle, work / "warm", opts)
    vols = read_case(cases[0], with_label=False)
    image, _ = to_ras(vols.image, vols.affine)
    start, end = foreground_box(image)
    box = int(np.prod(np.subtract(end, start)))
    t0 = time.perf_counter()
    predict_folder(cases[1:], bundle, work / "timed", opts)
    return time.perf_counter() - t0, int(np.prod(image.shape[1:])), box


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transunet3d_tiny")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    work = Path(tempfile.mkdtemp(prefix="bench_scaling-"))
    bundle = untrained_bundle(a.model, a.patch, a.sw_batch)
    opts = PredictOptions(overwrite=True, device=torch.device(a.device))
    print(f"{a.model}, roi {a.patch}^3, overlap 0.5, gaussian, sw_batch {a.sw_batch}, device {a.device}")
    print("| volume | input Mvox | box Mvox | s/case | s per input Mvox | s per box Mvox |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in SIZES:
        name = "x".join(map(str, shape))
        write_synthetic_dataset(work / name, 2, "brats2021", shape, seed=0)
        secs, vox, box = timed_folder(work / name, bundle, opts, work / f"out_{name}")
        per_vox, per_box = secs / vox * 1e6, secs / box * 1e6
        print(f"| {name} | {vox / 1e6:.2f} | {box / 1e6:.2f} | {secs:.2f} | {per_vox:.3f} | {per_box:.3f} |")
    rows = []
    write_synthetic_dataset(work / "n", max(COUNTS) + 1, "brats2021", SIZES[0], seed=1)
    _, cases = detect_cases(work / "n", LAYOUTS)
    predict_folder(cases[:1], bundle, work / "out_n_warm", opts)
    for n in COUNTS:
        t0 = time.perf_counter()
        predict_folder(cases[1 : n + 1], bundle, work / f"out_n{n}", opts)
        rows.append((n, time.perf_counter() - t0))
    print("| cases (96^3) | seconds | s/case |")
    print("|---:|---:|---:|")
    for n, s in rows:
        print(f"| {n} | {s:.2f} | {s / n:.2f} |")
    slope, intercept = np.polyfit([n for n, _ in rows], [s for _, s in rows], 1)
    print(f"fit: seconds = {intercept:.2f} + {slope:.2f} x cases")


if __name__ == "__main__":
    main()
