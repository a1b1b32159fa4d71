"""Resampling a CT-sized case to the planned spacing and its prediction back: time, peak memory, round-trip Dice.

A 512 x 512 x 300 case at 0.7 x 0.7 x 2.5 mm (body outline, fat/muscle/bone HU, three organ labels) goes through
medseg's `preprocess_case` (RAS, crop, z-score, resample) and then three region probability maps are
interpolated back onto the input's crop box and cut at 0.5 (what `medseg predict` does); the truth's round trip
through the target grid is scored with Dice per organ. The same round trip is timed with MONAI `Spacing`
(what a MONAI user writes) and `scipy.ndimage.zoom` (order 1, the CPU path nnU-Net-style code uses). Each
method runs in its own process so peak memory (max RSS) is its own.

    python benchmarks/bench_resample.py [--target 1.0 1.0 1.0] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.memory import peak_rss_bytes

SHAPE, SPACING = (512, 512, 300), (0.7, 0.7, 2.5)
ORGANS = {  # name: (centre mm, radii mm) of an ellipsoid
    "liver": ((200, 230, 150), (80, 70, 60)),
    "kidney": ((330, 260, 110), (25, 35, 45)),
    "spleen": ((340, 150, 160), (30, 40, 35)),
}


def ct_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (1, X, Y, Z) int16 HU, label (X, Y, Z) uint8, affine): an ellipse body with fat, muscle, a spine."""
    rng = np.random.default_rng(seed)
    mm = [np.arange(n, dtype=np.float32) * s for n, s in zip(SHAPE, SPACING, strict=True)]
    x, y = np.meshgrid(mm[0], mm[1], indexing="ij")
    body = ((x - 179) / 165) ** 2 + ((y - 179) / 120) ** 2
    slice_hu = np.where(body <= 1, -90.0, -1000.0)  # fat
    slice_hu[body <= 0.8] = 45.0  # muscle / soft tissue
    slice_hu[((x - 179) / 18) ** 2 + ((y - 250) / 18) ** 2 <= 1] = 700.0  # spine
    image = np.repeat(slice_hu[..., None], SHAPE[2], axis=2)
    label = np.zeros(SHAPE, np.uint8)
    zz = mm[2][None, None, :]
    for value, (centre, radii) in enumerate(ORGANS.values(), start=1):
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip((x[..., None], y[..., None], zz), centre, radii)) <= 1  # noqa: B905
        label[inside] = value
        image[inside] = 60.0 + 20 * value
    image += rng.normal(0, 15, SHAPE).astype(np.float32)
    return image[None].astype(np.int16), label, np.diag([*SPACING, 1.0])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def run_medseg(image, label, affine, target):
    import torch

    from medseg.core import CaseVolumes
    from medseg.pipelines.generic import task_from_description
    from medseg.transforms.preprocess import PreprocessPlan, preprocess_case
    from medseg.transforms.resample import resample_masks, resample_probabilities

    task = task_from_description(["ct"], {name: i for i, name in enumerate(ORGANS, start=1)})
    case = type("C", (), {"label_map": {name: i for i, name in enumerate(ORGANS, start=1)}})()
    plan = PreprocessPlan(crop_foreground=False, spacing=target)  # CT: no zero background to crop
    vols = CaseVolumes(image.astype(np.float32), None, affine)
    t0 = time.perf_counter()
    pre = preprocess_case(vols, case, None, plan)
    t1 = time.perf_counter()
    # Training's label path (per-region linear, binary at the model grid), then inference's probability path back:
    # the truth's round trip. The references below keep the same binary step.
    truth = np.stack([label == i for i in range(1, len(ORGANS) + 1)]).astype(np.uint8)
    down = resample_masks(truth, pre.image.shape[1:])
    probs = torch.from_numpy(down.astype(np.float32))
    t2 = time.perf_counter()
    back = resample_probabilities(probs, pre.meta.crop_shape, 0.5)
    t3 = time.perf_counter()
    assert task.scheme.region_names == list(ORGANS)
    return {"forward_s": t1 - t0, "inverse_s": t3 - t2, "model_shape": list(pre.image.shape[1:])}, back


def run_monai(image, label, affine, target):
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    img = MetaTensor(torch.from_numpy(image.astype(np.float32)), affine=torch.from_numpy(affine))
    t0 = time.perf_counter()
    fwd = Spacing(pixdim=target, mode="bilinear")(img)
    t1 = time.perf_counter()
    truth = np.stack([label == i for i in range(1, len(ORGANS) + 1)]).astype(np.float32)
    down = Spacing(pixdim=target, mode="bilinear")(MetaTensor(torch.from_numpy(truth), affine=torch.from_numpy(affine)))
    down = (down > 0.5).float()  # binary at the model grid, as training targets are
    t2 = time.perf_counter()
    back = Spacing(pixdim=SPACING, mode="bilinear")(down, output_spatial_shape=SHAPE)
    back = back.numpy() > 0.5
    t3 = time.perf_counter()
    return {"forward_s": t1 - t0, "inverse_s": t3 - t2, "model_shape": list(fwd.shape[1:])}, back


def run_scipy(image, label, affine, target):
    from scipy.ndimage import zoom

    factors = [s / t for s, t in zip(SPACING, target, strict=True)]
    t0 = time.perf_counter()
    fwd = zoom(image[0].astype(np.float32), factors, order=1)
    t1 = time.perf_counter()
    truth = np.stack([label == i for i in range(1, len(ORGANS) + 1)]).astype(np.float32)
    down = np.stack([zoom(t, factors, order=1) > 0.5 for t in truth]).astype(np.float32)
    t2 = time.perf_counter()
    back_f = [np.array(SHAPE) / np.array(d.shape) for d in down]
    back = np.stack([zoom(d, f, order=1, output=np.float32) > 0.5 for d, f in zip(down, back_f, strict=True)])
    t3 = time.perf_counter()
    return {"forward_s": t1 - t0, "inverse_s": t3 - t2, "model_shape": list(fwd.shape)}, back


METHODS = {"medseg": run_medseg, "monai": run_monai, "scipy": run_scipy}


def one(method: str, target: tuple[float, float, float], rounds: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    image, label, affine = ct_case()
    timings = []
    for r in range(rounds + 1):  # round 0 warms up (allocator, kernels) and is not counted
        t, back = METHODS[method](image, label, affine, target)
        if r:
            timings.append(t)
    dice = {name: _dice(back[i], label == i + 1) for i, name in enumerate(ORGANS)}
    return {
        "method": method,
        "forward_s": float(np.median([t["forward_s"] for t in timings])),
        "inverse_s": float(np.median([t["inverse_s"] for t in timings])),
        "model_shape": timings[0]["model_shape"],
        "round_trip_dice": dice,
        "peak_rss_gb": peak_rss_bytes() / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    target = tuple(args.target)
    if args.one:
        print(json.dumps(one(args.one, target, args.rounds, args.threads)))
        return
    print(f"case {SHAPE} at {SPACING} mm -> target {target} mm, {args.threads} threads, {args.rounds} rounds")
    for method in args.methods:
        cmd = [sys.executable, __file__, "--one", method, "--target", *map(str, target)]
        cmd += ["--rounds", str(args.rounds), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        dice = " ".join(f"{k}={v:.4f}" for k, v in r["round_trip_dice"].items())
        print(
            f"{method:7s} forward {r['forward_s']:6.2f} s  inverse (3 maps) {r['inverse_s']:6.2f} s  "
            f"total {r['forward_s'] + r['inverse_s']:6.2f} s  model grid {r['model_shape']}  "
            f"peak RSS {r['peak_rss_gb']:.2f} GB  round-trip Dice {dice}"
        )


if __name__ == "__main__":
    main()
