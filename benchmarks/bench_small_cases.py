"""Folders of small cases: cases/s when the windows of several cases share forward passes.

    python benchmarks/bench_small_cases.py --cases 24 --shape 56 56 44 --patch 64 --batch 1 4 8 --rounds 3
    python benchmarks/bench_small_cases.py --device cuda --model transunet3d_base --cases 200 --batch 1 8 16

Anatomy-based BraTS-like cases of --shape voxels (written once under --data) whose foreground fits one --patch
window, predicted by `predict_folder` with window batches of --batch: with batch 1 every case runs its own forward
pass; with batch B, B cases share one (`inference.window_batch`). One window per case, so the window batch changes
nothing else. Each setting runs after a warm-up on the first case, in alternating order over --rounds; the labels of
every run are compared with the first run's (voxels labelled differently: float rounding where an untrained
network's probability sits at the threshold). Seeded untrained weights (`untrained.py`): the figure is the
network's cost per case, not its quality.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from untrained import untrained_bundle

from medseg.data.layouts import detect_cases
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.inference.window_batch import window_slices
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset


def small_cases(root: Path, n: int, shape: tuple[int, int, int]) -> Path:
    folder = root / f"anatomy_small_{n}_{'x'.join(map(str, shape))}"
    if not (folder / ".complete").exists():
        write_synthetic_dataset(folder, n, "brats2021", shape, seed=3000, workers=os.cpu_count() or 1)
        (folder / ".complete").write_text("")
    return folder


def labels(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("[!.]*.nii.gz"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="transunet3d_small")
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--shape", type=int, nargs=3, default=[56, 56, 44])
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=Path("outputs/bench_small_cases"))
    a = p.parse_args()
    device = torch.device(a.device)
    bundle = untrained_bundle(a.model, a.patch)
    _, cases = detect_cases(small_cases(a.data, a.cases + 1, tuple(a.shape)), LAYOUTS)
    warm, timed = cases[:1], cases[1:]
    windows = len(window_slices(a.shape, [a.patch] * 3, bundle.infer.overlap))
    print(
        f"{len(timed)} cases of {'x'.join(map(str, a.shape))} (at most {windows} window(s) of {a.patch}^3 each), "
        f"{a.model} on {device}, torch threads {torch.get_num_threads()}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench_small_cases-"))
    rates: dict[int, list[float]] = {b: [] for b in a.batch}
    differ = dict.fromkeys(a.batch, 0)
    reference: dict[str, np.ndarray] | None = None
    for r in range(a.rounds):
        for b in a.batch if r % 2 == 0 else a.batch[::-1]:
            infer = bundle.infer.override(sw_batch_size=b)
            opts = PredictOptions(infer=infer, device=device, workers=0, share_windows=True)
            predict_folder(warm, bundle, work / f"warm_{r}_{b}", opts)
            out = work / f"out_{r}_{b}"
            t0 = time.perf_counter()
            results = predict_folder(timed, bundle, out, opts)
            rates[b].append(len(timed) / (time.perf_counter() - t0))
            assert all(x.status == "ok" for x in results), [x.error for x in results if x.status != "ok"]
            got = labels(out)
            reference = reference or got
            assert got.keys() == reference.keys()
            differ[b] = max(differ[b], sum(int((got[k] != reference[k]).sum()) for k in got))
    labelled = sum(int((v > 0).sum()) for v in reference.values())
    print(f"window batch  cases/s (median)  rounds  voxels labelled differently from the first run (of {labelled})")
    for b in a.batch:
        print(f"{b:12d}  {statistics.median(rates[b]):14.2f}  {' '.join(f'{x:.2f}' for x in rates[b])}  {differ[b]}")


if __name__ == "__main__":
    main()
