"""How the post-processing choice on validation cases carries to held-out cases, per tie-break policy.

The search (`medseg.evaluation.postprocess_search`) scores each candidate rule on a few validation cases; rules
that score the same there (no component of the sizes between them in those cases) can differ on new cases. This
benchmark takes a trained model's raw predictions (`medseg predict --no-postprocess`) of its validation cases and
of held-out cases, chooses rules on the validation cases with each policy, and scores the held-out cases with the
chosen rules: region Dice, HD95 and BraTS 2023 lesion-wise Dice, false and missed lesions. Policies: the rule of
the tied best ones with the smallest threshold (medseg before 2026-12-04), the largest threshold that ties within
1e-3 and misses no more true lesions ("largest" only when it beats every threshold: medseg's `pick_rule`), the most
aggressive tied rule ("largest" on ties).

    python benchmarks/bench_postprocess_choice.py \
        --val-pred VAL_RAW --val-data VAL_CASES --test-pred TEST_RAW --test-data TEST_CASES [--test-pred ... ]

VAL_CASES / TEST_CASES are dataset folders with ground truth (any layout `medseg data scan` reads); the raw
prediction folders hold `<case>.nii.gz` label maps. One line per policy and region, then the mean over regions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.config import RegionRule
from medseg.data.layouts import detect_cases
from medseg.evaluation.lesionwise import lesion_wise
from medseg.evaluation.metrics import dice, hd95
from medseg.evaluation.postprocess_search import MIN_GAIN, ScoredCase, pick_rule, search_postprocess
from medseg.io.nifti import load_header, read_label
from medseg.pipelines import get_task
from medseg.transforms.labels import labels_to_regions
from medseg.transforms.postprocess import describe_plan, postprocess


def first_tied(candidates):
    """The choice before 2026-12-04: the first rule (smallest threshold) of those with the best score."""
    best = max(candidates, key=lambda c: c.score)
    return best.rule if best.score > candidates[0].score + MIN_GAIN else RegionRule()


def last_tied(candidates):
    """nnU-Net's leaning: the most aggressive rule ("largest" included) of those with the best score."""
    best = max(c.score for c in candidates)
    if best <= candidates[0].score + MIN_GAIN:
        return RegionRule()
    return [c.rule for c in candidates if c.score >= best - 1e-9][-1]


POLICIES = {"smallest_tied": first_tied, "largest_threshold": pick_rule, "most_aggressive_tied": last_tied}


def read_cases(pred_dir: Path, data_dir: Path, task) -> list[tuple[str, ScoredCase]]:
    """(case id, raw region masks + truth) for every case of `data_dir` with a prediction in `pred_dir`."""
    out = []
    for case in detect_cases(data_dir, task.layouts)[1]:
        path = pred_dir / f"{case.id}.nii.gz"
        if not case.label or not path.exists():
            continue
        img = load_header(case.label, case.id)
        shape, affine = img.shape[:3], img.affine
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        gt = labels_to_regions(read_label(case, shape, affine), task.scheme, case.label_map)
        pred_case = type(case)(case.id, (), (), str(path), case.label_map, case.layout)
        pred = labels_to_regions(read_label(pred_case, shape, affine), task.scheme, case.label_map)
        out.append((case.id, ScoredCase(pred.astype(bool), gt.astype(bool), spacing)))
    return out


def score(cases: list[tuple[str, ScoredCase]], task, rules) -> list[dict]:
    rows = []
    for cid, case in cases:
        masks = postprocess(case.pred, task.scheme, rules, case.spacing)
        row: dict = {"id": cid}
        for i, name in enumerate(task.scheme.region_names):
            lw = lesion_wise(masks[i], case.gt[i], case.spacing)
            row[name] = {
                "dice": dice(masks[i], case.gt[i]),
                "hd95": hd95(masks[i], case.gt[i], case.spacing, task.empty_hd95_mm),
                "lesion_dice": lw.dice,
                "fp": lw.false_positives,
                "missed": lw.missed,
            }
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="brats")
    ap.add_argument("--val-pred", type=Path, required=True)
    ap.add_argument("--val-data", type=Path, required=True)
    ap.add_argument("--test-pred", type=Path, action="append", required=True)
    ap.add_argument("--test-data", type=Path, action="append", required=True)
    ap.add_argument("--json", type=Path, help="write every policy's rules and per-case rows here")
    args = ap.parse_args()
    task = get_task(args.task)
    val = read_cases(args.val_pred, args.val_data, task)
    test = [c for p, d in zip(args.test_pred, args.test_data, strict=True) for c in read_cases(p, d, task)]
    print(f"{len(val)} validation cases, {len(test)} held-out cases")
    report = {}
    for policy in POLICIES:
        rules, _table = search_postprocess([c for _, c in val], task.scheme, POLICIES[policy])
        rows = score(test, task, rules)
        report[policy] = {"rules": describe_plan(rules), "rows": rows}
        print(f"policy={policy}  rules: {describe_plan(rules)}")
        for name in task.scheme.region_names:
            m = {k: float(np.mean([r[name][k] for r in rows])) for k in ("dice", "hd95", "lesion_dice")}
            fp = sum(r[name]["fp"] for r in rows)
            missed = sum(r[name]["missed"] for r in rows)
            print(
                f"  {name}: dice={m['dice']:.3f} hd95={m['hd95']:.1f} lesion_dice={m['lesion_dice']:.3f} "
                f"false_lesions={fp} missed_lesions={missed}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
