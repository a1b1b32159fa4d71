"""Folder inference: `medseg predict` (each engine) against the pipeline a competent MONAI user writes, same weights,
same threads, alternating order, several rounds, warm-up excluded, on anatomy-based 240x240x155 cases with ground
truth, so every speed figure stands next to its Dice.

MONAI reference ("fair"): LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(1 mm) ->
CropForegroundd -> NormalizeIntensityd(nonzero, channel-wise) -> sliding_window_inference(roi, overlap 0.5, gaussian)
-> sigmoid -> Invertd -> threshold -> labels -> SaveImage, as the SwinUNETR BraTS tutorial does. The same without
CropForegroundd is the second reference row. medseg runs without post-processing here (`postprocess={}`), so both
sides produce the network's raw masks; the post-processed numbers are bench_quality's.

    python benchmarks/bench_infer.py --model outputs/bench_quality/runs/<run>/best.pt --cases 3 --rounds 3
    python benchmarks/bench_infer.py --model best.pt --engines torch,torch-bf16,onnxruntime,openvino \
        --int8-calibration outputs/bench_quality/data/anatomy_0_24_240x240x155 --memory

One line per pipeline: `infer pipeline=<name> s_per_case=.. dice_mean=.. dice_et=.. dice_tc=.. dice_wt=..` (medseg
engines also `prob_diff_max=.. prob_diff_mean=..`: sigmoid probabilities against PyTorch fp32 on real windows of the
first case; with `--memory`, `peak_rss_gb=..` of `medseg predict` on one case in its own process), then
`infer_speedup_vs_fair_monai=<best medseg engine> dice_delta=..`. On a CPU with AVX-512 BF16 a third MONAI row,
`monai-fair-bf16`, runs the fair pipeline's network under bf16 autocast (a stronger reference than the fp32 one).
`--int8-calibration DIR` adds the int8 export (calibrated on DIR's cases, not the test cases) run by onnxruntime and
openvino.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    SaveImage,
    Spacingd,
)

from medseg.data.layouts import detect_cases
from medseg.errors import MedsegError
from medseg.inference.engine_choice import open_engine
from medseg.inference.engines import cpu_has_bf16
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset
from medseg.transforms.labels import regions_to_labels
from medseg.workflows.evaluate import evaluate
from medseg.workflows.export import calibration_windows, export_model
from medseg.workflows.predict import FolderPredictor, PredictPlan

ROOT = Path(__file__).resolve().parents[1]


def monai_reference(cases, bundle, out_dir: Path, sw_batch: int, crop: bool, bf16: bool = False) -> None:
    """The hand-written MONAI pipeline, one case at a time, the network in PyTorch fp32 on the CPU (`bf16`: under
    bf16 autocast, what a MONAI user who knows the CPU has AVX-512 BF16 can add in one line)."""
    model = bundle.build_model().eval()
    steps = [
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
    ]
    if crop:
        steps.append(CropForegroundd("image", source_key="image", allow_smaller=True))
    steps.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    pre = Compose(steps)
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
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = sliding_window_inference(
                data["image"][None], bundle.patch_size, sw_batch, model, overlap=0.5, mode="gaussian"
            )
        data["pred"] = torch.sigmoid(logits.float())[0]
        inverted = post(data)["pred"]  # probabilities back on the input grid, then threshold
        labels = regions_to_labels((inverted > 0.5).numpy(), bundle.scheme, case.label_map)
        saver(MetaTensor(labels[None], affine=inverted.affine, meta={**inverted.meta, "filename_or_obj": case.id}))


def ensure_cases(root: Path, n: int, seed: int) -> Path:
    folder = root / f"anatomy_{seed}_{n}_240x240x155"
    if not (folder / ".complete").exists():
        write_synthetic_dataset(folder, n, "brats2021", (240, 240, 155), seed=seed, workers=os.cpu_count() or 1)
        (folder / ".complete").write_text("")
    return folder


def prob_diffs(predictors: dict, windows: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Max and mean |sigmoid difference| of each engine against PyTorch fp32 on the same windows."""
    bundle = next(iter(predictors.values())).bundle
    reference = open_engine("torch", bundle, torch.device("cpu"), False, "ref")
    ref = torch.sigmoid(reference(windows))
    out = {}
    for name, predictor in predictors.items():
        diff = (torch.sigmoid(predictor.engine(windows)) - ref).abs()
        out[name] = (float(diff.max()), float(diff.mean()))
    return out


def peak_rss_gb(model: str, engine: str, case_dir: Path, out: Path) -> float:
    """Peak resident memory of `medseg predict` on one case, in its own process (GiB)."""
    cmd = [sys.executable, "-m", "medseg", "predict", "--model", model, str(case_dir), str(out), "--no-postprocess"]
    subprocess.run([*cmd, "--engine", engine], check=True, capture_output=True, cwd=ROOT)
    return json.loads((out / "predict_report.json").read_text())["peak_memory_gb"]["rss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained medseg checkpoint (e.g. bench_quality's best.pt)")
    p.add_argument("--cases", type=int, default=3, help="timed cases (one more is the warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per pipeline")
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--engines", default="torch,torch-bf16,onnxruntime,openvino")
    p.add_argument("--data", type=Path, default=ROOT / "outputs" / "bench_infer", help="where the cases are made")
    p.add_argument("--seed", type=int, default=1000, help="bench_quality's test cases are seed 1000")
    p.add_argument("--int8-calibration", type=Path, help="training cases to calibrate an int8 export on")
    p.add_argument("--memory", action="store_true", help="also peak RSS per engine, one case per process")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    folder = ensure_cases(a.data, a.cases + 1, a.seed)
    _, cases = detect_cases(folder, LAYOUTS)
    warm, timed = cases[:1], cases[1:]
    work = Path(tempfile.mkdtemp(prefix="bench_infer-"))
    models = {engine: a.model for engine in a.engines.split(",")}
    if a.int8_calibration:
        int8 = work / "model_int8.onnx"
        try:
            report = export_model(a.model, int8, "int8", a.int8_calibration)
            print(f"int8 export: max probability difference {report.max_prob_diff:.3g} on calibration windows")
            models |= {"int8-onnxruntime": str(int8), "int8-openvino": str(int8)}
        except MedsegError as exc:  # refused by the export check: a finding to report
            print(f"infer pipeline=medseg-int8 skipped: {exc}", flush=True)
    predictors = {}
    for label, model in list(models.items()):
        try:
            predictor = FolderPredictor.from_model(
                model,
                device="cpu",
                engine=label.removeprefix("int8-"),
                postprocess=False,
                sw_batch_size=a.sw_batch,
                overlap=0.5,
            )
        except MedsegError as exc:  # an engine that cannot run this graph is a finding, not a crash
            print(f"infer pipeline=medseg-{label} skipped: {exc}", flush=True)
            del models[label]
            continue
        predictors[f"medseg-{label}"] = predictor
    bundle = next(iter(predictors.values())).bundle
    windows = torch.from_numpy(np.stack(calibration_windows(bundle, folder, count=4, seed=1)))
    diffs = prob_diffs(predictors, windows)
    memory = {}
    if a.memory:
        one = work / "one_case"
        one.mkdir()
        os.symlink(Path(warm[0].images[0]).parent, one / Path(warm[0].images[0]).parent.name)
        for label, model in models.items():
            memory[f"medseg-{label}"] = peak_rss_gb(model, label.removeprefix("int8-"), one, work / f"mem_{label}")
    pipelines = {
        **{
            name: (lambda cs, out, pr=pr: pr.run(PredictPlan(cs, [], (0, 1), "brats2021"), out))
            for name, pr in predictors.items()
        },
        "monai-fair": lambda cs, out: monai_reference(cs, bundle, out, a.sw_batch, crop=True),
        "monai-no-crop": lambda cs, out: monai_reference(cs, bundle, out, a.sw_batch, crop=False),
    }
    if cpu_has_bf16():  # a stronger reference than the fp32 one, reported beside it
        pipelines["monai-fair-bf16"] = lambda cs, out: monai_reference(cs, bundle, out, a.sw_batch, True, bf16=True)
    for name, run in pipelines.items():  # warm-up: first calls, allocator, ONNX sessions
        run(warm, work / "warm" / name)
    times: dict[str, list[float]] = {n: [] for n in pipelines}
    names = list(pipelines)
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            t0 = time.perf_counter()
            pipelines[name](timed, out)
            times[name].append((time.perf_counter() - t0) / len(timed))
    setting = f"overlap 0.5, gaussian, sw_batch {a.sw_batch}, {torch.get_num_threads()} threads, best of {a.rounds}"
    print(f"{len(timed)} cases of 240x240x155 (+1 warm-up), {bundle.model_name}, roi {bundle.patch_size}, {setting}")
    dice = {}
    for name in names:
        s = evaluate(work / name, folder, "brats").summary
        dice[name] = {r: s[f"dice_{r}"]["mean"] for r in ("et", "tc", "wt")}
        mean = float(np.mean(list(dice[name].values())))
        regions = " ".join(f"dice_{k}={v:.4f}" for k, v in dice[name].items())
        speed = f"s_per_case={min(times[name]):.2f} median_s={np.median(times[name]):.2f}"
        extra = f" prob_diff_max={diffs[name][0]:.2g} prob_diff_mean={diffs[name][1]:.2g}" if name in diffs else ""
        extra += f" peak_rss_gb={memory[name]:.2f}" if name in memory else ""
        print(f"infer pipeline={name} {speed} dice_mean={mean:.4f} {regions}{extra}", flush=True)
    fair = min(times["monai-fair"])
    fair_dice = float(np.mean(list(dice["monai-fair"].values())))
    best = min((n for n in names if n.startswith("medseg")), key=lambda n: min(times[n]))
    delta = float(np.mean(list(dice[best].values()))) - fair_dice
    print(f"infer_speedup_vs_fair_monai={fair / min(times[best]):.2f} best={best} dice_delta={delta:+.4f}")
    if "monai-fair-bf16" in times:
        print(f"infer_speedup_vs_fair_monai_bf16={min(times['monai-fair-bf16']) / min(times[best]):.2f} best={best}")


if __name__ == "__main__":
    main()
