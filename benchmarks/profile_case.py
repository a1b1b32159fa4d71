"""Where the time of one case goes: read NIfTI, preprocess, sliding window, restore grid + labels, write.

    python benchmarks/profile_case.py --model transunet3d_base --device cuda          # untrained weights
    python benchmarks/profile_case.py --model best.pt --shape 96 96 72 --device cpu   # a checkpoint
    python benchmarks/profile_case.py --model transunet3d_base --device cuda --sw-batch 8 --channels-last

Stages run one after another (no overlap, unlike `predict_folder` with reader/writer processes), synchronised on
CUDA, after one warm-up case; weights do not change the timing. Prints seconds per stage, mean over cases.
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
from medseg.inference.engines import TorchEngine
from medseg.inference.sliding import sliding_predict
from medseg.io.bundle import ModelBundle, load_checkpoint
from medseg.io.nifti import read_case, save_nifti
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset
from medseg.transforms.geometry import restore_grid
from medseg.transforms.labels import regions_to_labels
from medseg.transforms.preprocess import preprocess_case

STAGES = ("read", "preprocess", "sliding_window", "restore_labels", "write")


def load_model(ref: str, patch: int) -> tuple[torch.nn.Module, ModelBundle]:
    if Path(ref).is_file():
        bundle = ModelBundle.from_dict(load_checkpoint(ref)["bundle"])
        return bundle.build_model(), bundle
    bundle = untrained_bundle(ref, patch)
    return bundle.build_model(), bundle


def profile(cases, model, bundle, a, device: torch.device) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    out = Path(tempfile.mkdtemp())

    def tick(stage: str, t0: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times[stage].append(now - t0)
        return now

    for case in cases:
        t = time.perf_counter()
        vols = read_case(case, with_label=False)
        t = tick("read", t)
        pre = preprocess_case(vols, case, None, bundle.preprocess)
        t = tick("preprocess", t)
        probs = sliding_predict(
            TorchEngine(model, device, bf16=not a.fp32 and device.type == "cuda"),
            pre.image,
            bundle.patch_size,
            overlap=a.overlap,
            mode="gaussian",
            sw_batch_size=a.sw_batch,
            device=device,
        ).numpy()
        t = tick("sliding_window", t)
        labels = regions_to_labels(restore_grid(probs > 0.5, pre.meta, fill=False), bundle.scheme, case.label_map)
        t = tick("restore_labels", t)
        save_nifti(labels, vols.affine, out / f"{case.id}.nii.gz")
        tick("write", t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transunet3d_base", help="registered name (untrained) or checkpoint")
    p.add_argument("--patch", type=int, default=128, help="roi for a model given by name")
    p.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="model weights in channels_last_3d")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (dynamic=False)")
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    device = torch.device(a.device)
    model, bundle = load_model(a.model, a.patch)
    model = model.to(device).eval()
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if a.compile:
        model = torch.compile(model, dynamic=False)
    data = Path(tempfile.mkdtemp()) / "data"
    write_synthetic_dataset(data, a.cases + 1, "brats2021", tuple(a.shape), seed=0)
    _, cases = detect_cases(data, LAYOUTS)
    t0 = time.perf_counter()
    profile(cases[:1], model, bundle, a, device)  # warm-up (cuDNN autotuning, compilation)
    warm = time.perf_counter() - t0
    times = profile(cases[1:], model, bundle, a, device)
    means = {s: float(np.mean(v)) for s, v in times.items()}
    total = sum(means.values())
    chosen = (("fp32", a.fp32), ("channels_last", a.channels_last), ("compile", a.compile))
    flags = " ".join(f for f, on in chosen if on)
    print(
        f"{a.model} on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
        f"{a.cases} case(s) of {'x'.join(map(str, a.shape))}, roi {bundle.patch_size}, overlap {a.overlap}, "
        f"sw_batch {a.sw_batch} {flags}; warm-up case {warm:.1f} s"
    )
    for s in STAGES:
        print(f"  {s:15s} {means[s]:7.3f} s  {100 * means[s] / total:5.1f} %")
    print(f"  {'total':15s} {total:7.3f} s")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
