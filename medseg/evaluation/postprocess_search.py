"""Choose the post-processing a model carries: per region, the component rule that scores best on validation cases.

As nnU-Net does for "keep the largest component" and the BraTS 2023 winners for size thresholds, the choice is made
on validation cases (never test cases). The score is region Dice plus BraTS 2023 lesion-wise Dice, so a rule must
help the lesion count without eating true tumour. Regions are decided outermost first (WT, then TC inside it, then
ET), each with the rules already chosen for its containers applied.

Rules that tie on the validation cases (none of them holds a component of the sizes between the thresholds, or
only a few voxels of one) are not equal on new cases: among them the largest size threshold is kept, since the
validation cases show it removes no true lesion and it removes more false ones (measured on held-out cases of four
models: `benchmarks/bench_postprocess_choice.py`, benchmarks/RESULTS.md). "Keep the largest component", which would also
delete a true satellite lesion of any size, is kept only when it beats every threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.config import RegionRule
from medseg.core import LabelScheme
from medseg.evaluation.lesionwise import lesion_dice
from medseg.evaluation.metrics import dice
from medseg.transforms.postprocess import nesting_order, postprocess

CANDIDATE_VOLUMES_MM3 = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
# A rule must beat "none" by this much (score = Dice + lesion-wise Dice, each a mean over cases).
MIN_GAIN = 1e-3


@dataclass(frozen=True)
class ScoredCase:
    """One validation case: raw thresholded region masks and ground truth (R, X, Y, Z) on one grid, spacing mm."""

    pred: np.ndarray
    gt: np.ndarray
    spacing: tuple[float, float, float]


def candidate_rules() -> list[RegionRule]:
    """`none` first (kept on ties), then size thresholds from small to large, then the largest component."""
    return [
        RegionRule(),
        *(RegionRule(kind="min_volume", min_volume_mm3=v) for v in CANDIDATE_VOLUMES_MM3),
        RegionRule(kind="largest"),
    ]


def pick_rule(scored: Sequence[tuple[float, RegionRule]]) -> RegionRule:
    """The rule to keep from (score, rule) pairs in `candidate_rules` order: none unless a rule beats it by
    `MIN_GAIN`; "largest" only when it beats every threshold by `MIN_GAIN`; else the largest threshold within
    `MIN_GAIN` of the best threshold's score. Differences under `MIN_GAIN` are a few boundary voxels (a missed
    validation lesion costs ~100x more), so they neither earn a rule nor rule one out."""
    baseline = scored[0][0]
    thresholds = [(s, r) for s, r in scored if r.kind == "min_volume"]
    best = max(s for s, _ in thresholds)
    largest = next((s for s, r in scored if r.kind == "largest"), None)
    if largest is not None and largest > max(best, baseline) + MIN_GAIN:
        return RegionRule(kind="largest")
    if best <= baseline + MIN_GAIN:
        return RegionRule()
    return [r for s, r in thresholds if s >= best - MIN_GAIN][-1]


def search_postprocess(
    cases: Sequence[ScoredCase],
    scheme: LabelScheme,
    pick: Callable[[Sequence[tuple[float, RegionRule]]], RegionRule] = pick_rule,
) -> tuple[dict[str, RegionRule], list[dict[str, float | str]]]:
    """(chosen rule per region, table of every candidate's mean Dice / lesion-wise Dice per region). `pick`: how a
    region's rule is chosen from its candidates' scores (another only to compare choices on held-out cases)."""
    names = scheme.region_names
    chosen: dict[str, RegionRule] = {}
    table: list[dict[str, float | str]] = []
    for i, _parents in nesting_order(scheme):
        name = names[i]
        scored = []
        for rule in candidate_rules():
            trial = {**chosen, name: rule}
            d, lw = [], []
            for case in cases:
                mask = postprocess(case.pred, scheme, trial, case.spacing)[i]
                d.append(dice(mask, case.gt[i]))
                lw.append(lesion_dice(mask, case.gt[i], case.spacing))
            row = {
                "region": name,
                "rule": rule.describe(),
                "dice": float(np.mean(d)),
                "lesion_dice": float(np.mean(lw)),
            }
            table.append(row)
            scored.append((row["dice"] + row["lesion_dice"], rule))
        chosen[name] = pick(scored)
        for row in table[-len(scored) :]:
            row["chosen"] = "yes" if row["rule"] == chosen[name].describe() else ""
    return {name: chosen[name] for name in names}, table
