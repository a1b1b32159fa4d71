"""Size, speed and held-out quality of trained models side by side: the light-model trade-off table.

For each `label=model` (a checkpoint or MLflow URI): parameters and forward GFLOPs at 128^3 (the network as its
bundle rebuilds it, pruned layouts included), then `predict` (torch fp32, the model's own post-processing) and
`evaluate` on the held-out anatomy-based cases of `bench_quality.py`, in `--rounds` rounds with the model order
reversed every round; seconds per case are whole-pipeline (decode, network, restore, write), median over rounds.

    python benchmarks/bench_tradeoff.py --work /work/qwork2 --rounds 2 \
        teacher=/path/best.pt student=/path/best.pt

One line per model: `tradeoff label=.. params_m=.. gflops_128=.. s_per_case=.. dice_et=.. ... hd95_wt=..`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import ensure_data, predict_and_score

from medseg.inference.model_source import load_bundle
from medseg.nets.profile import bundle_figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="label=checkpoint-or-URI")
    p.add_argument("--work", type=Path, default=Path("outputs/bench_quality"))
    p.add_argument("--test-cases", type=int, default=6)
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out cases")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    test_dir = ensure_data(args.work / "data", args.test_cases, (240, 240, 155), args.seed)
    rows = {label: {"label": label, **bundle_figures(load_bundle(ref))} for label, ref in models.items()}
    times: dict[str, list[float]] = {label: [] for label in models}
    order = list(models)
    for r in range(args.rounds):
        for label in order if r % 2 == 0 else order[::-1]:
            scored = predict_and_score(Path(models[label]), test_dir, args.work / "tradeoff" / label, "pp", args.device)
            times[label].append(scored["s_per_case"])
            rows[label]["summary"] = scored["summary"]
    for label, row in rows.items():
        s = row["summary"]
        row["s_per_case"] = statistics.median(times[label])
        dice = " ".join(f"dice_{k}={s[f'dice_{k}']:.4f}" for k in ("et", "tc", "wt"))
        hd = " ".join(f"hd95_{k}={s[f'hd95_{k}']:.3g}" for k in ("et", "tc", "wt"))
        mean = sum(s[f"dice_{k}"] for k in ("et", "tc", "wt")) / 3
        print(f"tradeoff label={label} params_m={row['params_m']:.2f} gflops_128={row['gflops']:.0f} "
              f"s_per_case={row['s_per_case']:.2f} {dice} mean={mean:.4f} "
              f"{hd} lesion_wt={s['lesion_dice_wt']:.3f}", flush=True)  # fmt: skip
    out = args.work / "reports" / "tradeoff.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
