"""Held-out quality on anatomy-based BraTS-like cases for a fixed training budget, as a new user would measure it.

Generates seeded anatomy-based cases (240x240x155, 1 mm, LPS; reused when present), trains a config for a time
budget with fold 0 held out for validation (and the post-processing choice), predicts held-out cases at native
resolution and evaluates them. Three prediction variants: the model's post-processing, none (`--no-postprocess`),
and T1ce masked as missing (`--allow-missing-modality`).

    python benchmarks/bench_quality.py --config brats_cpu --minutes 20
    python benchmarks/bench_quality.py --config brats_cpu --set model.name=segresnet --label segresnet
    python benchmarks/bench_quality.py --model outputs/bench_quality/runs/<run>/best.pt --label again

One machine-readable line per variant:
`quality variant=pp dice_et=.. dice_tc=.. dice_wt=.. hd95_wt=.. lesion_dice_wt=.. minutes=..` (all regions'
Dice, HD95 and lesion-wise Dice are printed; the JSON beside the run has per-case rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.memory import keep_freed_memory
from medseg.pipelines.brats import write_synthetic_dataset
from medseg.workflows.evaluate import evaluate
from medseg.workflows.predict import FolderPredictor
from medseg.workflows.scan import scan
from medseg.workflows.train import TrainRequest, run_training

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("dice", "hd95", "lesion_dice")


def ensure_data(root: Path, n: int, shape: tuple[int, int, int], seed: int) -> Path:
    """Seeded anatomy-based cases in the BraTS 2021 layout, generated once."""
    folder = root / f"anatomy_{seed}_{n}_{'x'.join(map(str, shape))}"
    if not (folder / ".complete").exists():
        write_synthetic_dataset(folder, n, "brats2021", shape, seed=seed, workers=os.cpu_count() or 1)
        (folder / ".complete").write_text("")
    return folder


def train(args, work: Path, train_dir: Path) -> tuple[Path, float]:
    manifest = work / "data" / f"{train_dir.name}.json"
    if not manifest.exists():
        scan(train_dir, "brats", manifest, folds=5, seed=0)
    request = TrainRequest(
        "brats",
        config=args.config,
        overrides=[*args.set, f"train.max_minutes={args.minutes}", f"data.cache_dir={work / 'cache'}"],
        manifest=manifest,
        fold=0,
        device=args.device,
        tracking_uri=f"sqlite:///{(work / 'mlflow.db').resolve()}",
        experiment="bench_quality",
        run_name=args.label,
        out=work / "runs",
    )
    t0 = time.monotonic()
    outcome = run_training(request)
    return outcome.result.best_path, (time.monotonic() - t0) / 60


def predict_and_score(model_path: Path, test_dir: Path, out: Path, variant: str, device: str) -> dict:
    predictor = FolderPredictor.from_model(
        str(model_path), device=device, postprocess=variant != "raw", allow_missing=variant == "no_t1ce"
    )
    plan = predictor.plan(test_dir)
    if variant == "no_t1ce":  # T1ce absent from every case: the model masks it
        t1ce = predictor.bundle.channels.index("t1ce")
        plan.cases = [
            dataclasses.replace(c, images=tuple(p if i != t1ce else p + ".absent" for i, p in enumerate(c.images)))
            for c in plan.cases
        ]
    t0 = time.monotonic()
    results = predictor.run(plan, out, overwrite=True)
    seconds = (time.monotonic() - t0) / max(1, len(plan.cases))
    failed = [r.error for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"prediction failed: {failed[0]}")
    outcome = evaluate(out, test_dir, "brats")
    summary = {k: v["mean"] for k, v in outcome.summary.items()}
    return {"variant": variant, "s_per_case": seconds, "summary": summary, "rows": outcome.result.rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="brats_cpu", help="a YAML file or a shipped config name")
    p.add_argument("--set", action="append", default=[], help="config override, repeatable")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--train-cases", type=int, default=24)
    p.add_argument("--test-cases", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    p.add_argument("--seed", type=int, default=0, help="data seed (test cases use seed + 1000)")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_quality")
    p.add_argument("--label", default="run")
    p.add_argument("--model", type=Path, help="evaluate this model instead of training one")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="pp,raw,no_t1ce")
    args = p.parse_args()
    keep_freed_memory()  # as every `medseg` command does (training ran half as fast without it)
    work = args.work
    (work / "data").mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)
    train_dir = ensure_data(work / "data", args.train_cases, shape, args.seed)
    test_dir = ensure_data(work / "data", args.test_cases, shape, args.seed + 1000)
    minutes = 0.0
    model_path = args.model
    if model_path is None:
        model_path, minutes = train(args, work, train_dir)
    device = args.device
    report = {"label": args.label, "model": str(model_path), "train_minutes": minutes, "variants": []}
    for variant in args.variants.split(","):
        if variant == "no_t1ce" and not FolderPredictor.from_model(str(model_path), device="cpu").model_can_mask:
            print(f"quality label={args.label} variant=no_t1ce skipped: an early-fusion model cannot mask T1ce")
            continue
        scored = predict_and_score(model_path, test_dir, work / "predictions" / args.label / variant, variant, device)
        report["variants"].append(scored)
        s = scored["summary"]
        fields = " ".join(f"{m}_{r}={s[f'{m}_{r}']:.4g}" for m in METRICS for r in ("et", "tc", "wt"))
        print(f"quality label={args.label} variant={variant} {fields} minutes={minutes:.1f} "
              f"s_per_case={scored['s_per_case']:.1f}", flush=True)  # fmt: skip
    out = work / "reports" / f"{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
