"""End-to-end folder inference: `medseg predict` against the pipeline a MONAI user writes by hand, same
network and weights, same machine, alternating, on labelled synthetic cases.

Reference: LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(1 mm) -> NormalizeIntensityd
-> sliding_window_inference(roi, overlap 0.5, gaussian) -> sigmoid -> Invertd -> threshold -> labels ->
SaveImage. Also times `medseg predict --single-pass` (one forward over the foreground box). Reports cases/s,
the ratio, mean region Dice of each against the ground truth, Dice agreement
between the two outputs, peak RSS (and GPU memory on CUDA).

    python benchmarks/bench_infer.py --quick            # trains the smoke model on the fly (a few minutes)
    python benchmarks/bench_infer.py --model best.pt --cases 4 --shape 240 240 155

Last line: `infer_speedup_vs_monai=<ratio> dice_delta=<medseg mean Dice - reference mean Dice>`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    SaveImage,
    Spacingd,
)

from medseg.data.layouts import detect_cases
from medseg.data.manifest import save_manifest
from medseg.data.validate import scan_dataset
from medseg.evaluation.metrics import dice
from medseg.inference.model_source import load_bundle
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.pipelines import get_task
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset
from medseg.transforms.labels import labels_to_regions, regions_to_labels
from medseg.workflows.train import TrainRequest, run_training

ROOT = Path(__file__).resolve().parents[1]


def train_quick_model(work: Path) -> Path:
    """The smoke model trained on synthetic data as in `medseg demo` (CPU, ~3 minutes on 2 cores)."""
    # Same volume size as the quick test cases: synthetic anatomy scales with the volume, so a model trained
    # on smaller volumes sees differently sized structures.
    write_synthetic_dataset(work / "train", 16, "brats2021", (96, 96, 72), seed=11)
    manifest, _ = scan_dataset(work / "train", get_task("brats"), folds=4)
    save_manifest(manifest, work / "train.json")
    overrides = ["train.epochs=25", "train.val_every=25", "train.samples_per_volume=4", "train.overlays=0"]
    request = TrainRequest(
        "brats",
        config="brats_smoke",
        overrides=[*overrides, f"data.cache_dir={work / 'cache'}"],
        manifest=work / "train.json",
        fold=0,
        device="cpu",
        tracking=False,
        out=work / "runs",
    )
    return run_training(request).result.best_path


def monai_reference(cases, bundle, out_dir: Path, device: torch.device, sw_batch: int) -> None:
    """The hand-written MONAI pipeline, one case at a time."""
    model = bundle.build_model().to(device)
    pre = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )
    post = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)
    saver = SaveImage(
        output_dir=str(out_dir),
        output_postfix="",
        separate_folder=False,
        resample=False,
        output_dtype=np.uint8,
        print_log=False,
    )
    for case in cases:
        data = pre({"image": list(case.images)})
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            logits = sliding_window_inference(
                data["image"][None].to(device), bundle.patch_size, sw_batch, model, overlap=0.5, mode="gaussian"
            )
        data["pred"] = torch.sigmoid(logits.float())[0].cpu()
        inverted = post(data)["pred"]  # probabilities back on the input grid, then threshold
        labels = regions_to_labels((inverted > 0.5).numpy(), bundle.scheme, case.label_map)
        saver(MetaTensor(labels[None], affine=inverted.affine, meta={**inverted.meta, "filename_or_obj": case.id}))


def mean_dice(pred_dir: Path, cases, scheme) -> float:
    scores = []
    for c in cases:
        gt = np.asarray(nib.load(c.label).dataobj)
        pr = np.asarray(nib.load(pred_dir / f"{c.id}.nii.gz").dataobj)
        g, p = labels_to_regions(gt, scheme, c.label_map), labels_to_regions(pr, scheme, c.label_map)
        scores.append([dice(p[i], g[i]) for i in range(len(g))])
    return float(np.mean(scores))


def agreement(a: Path, b: Path, cases, scheme) -> float:
    vals = []
    for c in cases:
        x = labels_to_regions(np.asarray(nib.load(a / f"{c.id}.nii.gz").dataobj), scheme, c.label_map)
        y = labels_to_regions(np.asarray(nib.load(b / f"{c.id}.nii.gz").dataobj), scheme, c.label_map)
        vals += [dice(x[i], y[i]) for i in range(len(x))]
    return float(np.mean(vals))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="medseg checkpoint/bundle; default: train the smoke model on the fly")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    p.add_argument("--rounds", type=int, default=2, help="alternating timed rounds per pipeline")
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="3 cases of 96x96x72, one round")
    a = p.parse_args()
    if a.quick:
        a.cases, a.shape, a.rounds = 3, [96, 96, 72], 1
    work = Path(tempfile.mkdtemp(prefix="bench_infer-"))
    model_path = Path(a.model) if a.model else train_quick_model(work)
    bundle = load_bundle(str(model_path))
    write_synthetic_dataset(work / "test", a.cases, "brats2021", tuple(a.shape), seed=99)
    _, cases = detect_cases(work / "test", LAYOUTS)
    device = torch.device(a.device)
    infer = bundle.infer.override(overlap=0.5, sw_batch_size=a.sw_batch, postprocess={})
    opts = PredictOptions(infer=infer, overwrite=True, device=device)
    single = PredictOptions(infer=infer, overwrite=True, device=device, single_pass=True)
    names = ["monai", "medseg", "medseg_single"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            out = work / f"out_{name}"
            shutil.rmtree(out, ignore_errors=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if name.startswith("medseg"):
                predict_folder(cases, bundle, out, single if name == "medseg_single" else opts)
            else:
                out.mkdir(parents=True)
                monai_reference(cases, bundle, out, device, a.sw_batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    rate = {k: a.cases / min(v) for k, v in times.items()}
    d_medseg = mean_dice(work / "out_medseg", cases, bundle.scheme)
    d_monai = mean_dice(work / "out_monai", cases, bundle.scheme)
    d_single = mean_dice(work / "out_medseg_single", cases, bundle.scheme)
    agree = agreement(work / "out_medseg", work / "out_monai", cases, bundle.scheme)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    shape = "x".join(map(str, a.shape))
    print(
        f"{a.cases} cases of {shape}, model {bundle.model_name}, patch {bundle.patch_size}, device {device}, "
        f"sw_batch {a.sw_batch}, best of {a.rounds} round(s)"
    )
    print(f"medseg: {rate['medseg']:.3f} cases/s, mean Dice {d_medseg:.4f}")
    print(f"MONAI reference: {rate['monai']:.3f} cases/s, mean Dice {d_monai:.4f}")
    print(
        f"medseg --single-pass: {rate['medseg_single']:.3f} cases/s, mean Dice {d_single:.4f} "
        f"(speedup {rate['medseg_single'] / rate['monai']:.2f}, dice_delta {d_single - d_monai:+.4f})"
    )
    print(f"Dice agreement medseg vs reference: {agree:.4f}; peak RSS (both, one process): {rss:.2f} GB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")
    print(f"infer_speedup_vs_monai={rate['medseg'] / rate['monai']:.2f} dice_delta={d_medseg - d_monai:+.4f}")


if __name__ == "__main__":
    main()
