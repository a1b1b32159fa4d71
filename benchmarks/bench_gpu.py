"""GPU figures for the base models (run by hand on a CUDA machine; results go to benchmarks/RESULTS.md).

For each model: bf16-autocast vs fp32 agreement of the forward pass, training throughput and peak memory at
batch 2 x 128^3 (bf16 autocast, AdamW, Dice+BCE), model FLOP utilisation, and end-to-end folder inference
(read 4 NIfTI -> preprocess -> sliding window 128^3, overlap 0.5, gaussian -> invert -> write) of a
240x240x155 synthetic BraTS case with peak GPU memory.

    python benchmarks/bench_gpu.py --models transunet3d_base swinunet3d_base --out results.json
"""

from __future__ import annotations

import argparse
import json
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
from medseg.nets import create_model
from medseg.nets.profile import model_figures
from medseg.pipelines.brats import LAYOUTS, write_synthetic_dataset
from medseg.training.optim import DiceBCELoss

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peak (SXM datasheet)


def _sync_time(fn, iters: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def bf16_agreement(name: str) -> dict:
    torch.manual_seed(0)
    model = create_model(name).cuda().eval()
    x = torch.randn(1, 4, 128, 128, 128, device="cuda")
    with torch.no_grad():
        ref = torch.sigmoid(model(x).float())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = torch.sigmoid(model(x).float())
    a, b = ref > 0.5, low > 0.5
    dice = (2 * (a & b).sum() / (a.sum() + b.sum()).clamp(min=1)).item()
    return {
        "bf16_max_abs_prob_diff": (ref - low).abs().max().item(),
        "bf16_mean_abs_prob_diff": (ref - low).abs().mean().item(),
        "bf16_vs_fp32_mask_dice": dice,
    }


def training(name: str, batch: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DiceBCELoss()
    x = torch.randn(batch, 4, 128, 128, 128, device="cuda")
    y = (torch.rand(batch, 3, 128, 128, 128, device="cuda") > 0.9).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.reset_peak_memory_stats()
    t = _sync_time(step, iters)
    fwd = model_figures(name)["gflops"] * 1e9
    achieved = 3 * fwd * batch / t  # forward + backward ~ 3x forward FLOPs
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), 989.0) * 1e12
    return {
        "train_batch": batch,
        "train_step_s": t,
        "train_samples_per_s": batch / t,
        "train_peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "train_tflops": achieved / 1e12,
        "train_mfu": achieved / peak,
    }


def inference(name: str, data: Path, sw_batch: int, single_pass: bool = False) -> dict:
    bundle = untrained_bundle(name, 128, sw_batch)
    _, cases = detect_cases(data, LAYOUTS)
    out = Path(tempfile.mkdtemp())
    opts = PredictOptions(overwrite=True, device=torch.device("cuda"), single_pass=single_pass)
    predict_folder(cases[:1], bundle, out / "warm", opts)  # warm-up: cuDNN autotune, allocator
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = predict_folder(cases, bundle, out / "timed", opts)
    total = time.perf_counter() - t0
    return {
        "infer_cases": len(cases),
        "infer_s_per_case_end_to_end": total / len(cases),
        "infer_s_per_case_model_path": float(np.mean([r.seconds for r in results])),
        "infer_peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "infer_sw_batch": sw_batch,
        "infer_single_pass": single_pass,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["transunet3d_base", "swinunet3d_base"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    p.add_argument("--infer-only", action="store_true", help="skip the bf16 and training measurements")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the timed inference")
    p.add_argument("--single-pass", action="store_true", help="one forward over the foreground box per case")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    data = Path(tempfile.mkdtemp()) / "brats"
    write_synthetic_dataset(data, args.cases, "brats2021", (240, 240, 155), seed=0)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "models": {}}
    for name in args.models:
        row = {} if args.infer_only else {**bf16_agreement(name), **training(name, args.batch, args.iters)}
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as prof:
                row.update(inference(name, data, args.sw_batch, args.single_pass))
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        else:
            row.update(inference(name, data, args.sw_batch, args.single_pass))
        report["models"][name] = row
        print(name, json.dumps(row, indent=1), flush=True)
        torch.cuda.empty_cache()
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
