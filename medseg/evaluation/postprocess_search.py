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
from medseg.evaluation.lesionwise import lesion_dice_missed
from medseg.evaluation.metrics import dice
from medseg.transforms.postprocess import nesting_order, postprocess

CANDIDATE_VOLUMES_MM3 = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
# Score differences under this (score = Dice + lesion-wise Dice, each a mean over cases) are boundary voxels: a
# rule must gain more to beat "none" (or "largest" to beat the thresholds), and thresholds within it tie.
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


@dataclass(frozen=True)
class Candidate:
    """A rule with its validation score and the scored true lesions it misses (summed over cases)."""

    score: float
    missed: int
    rule: RegionRule


def pick_rule(candidates: Sequence[Candidate]) -> RegionRule:
    """The rule to keep, from candidates in `candidate_rules` order: none unless a rule beats it by `MIN_GAIN`;
    "largest" only when it beats every threshold by `MIN_GAIN`; else the largest threshold that ties with the best
    one (within `MIN_GAIN`: boundary voxels) while missing no more true lesions than it, and itself beats none.
    The lesion count guards the tie where the tolerance cannot: on hundreds of validation cases one missed lesion
    moves the mean score by less than `MIN_GAIN`."""
    baseline = candidates[0].score
    thresholds = [c for c in candidates if c.rule.kind == "min_volume"]
    best = max(thresholds, key=lambda c: c.score)
    largest = next((c for c in candidates if c.rule.kind == "largest"), None)
    if largest is not None and largest.score > max(best.score, baseline) + MIN_GAIN:
        return largest.rule
    if best.score <= baseline + MIN_GAIN:
        return RegionRule()
    tied = [
        c
        for c in thresholds
        if c.score >= best.score - MIN_GAIN and c.score > baseline + MIN_GAIN and c.missed <= best.missed
    ]
    return tied[-1].rule


def search_postprocess(
    cases: Sequence[ScoredCase],
    scheme: LabelScheme,
    pick: Callable[[Sequence[Candidate]], RegionRule] = pick_rule,
) -> tuple[dict[str, RegionRule], list[dict[str, float | str]]]:
    """(chosen rule per region, table of every candidate's mean Dice / lesion-wise Dice / missed lesions per
    region). `pick`: how a region's rule is chosen from its candidates (another only to compare choices on held-out
    cases)."""
    names = scheme.region_names
    chosen: dict[str, RegionRule] = {}
    table: list[dict[str, float | str]] = []
    for i, _parents in nesting_order(scheme):
        name = names[i]
        scored = []
        for rule in candidate_rules():
            trial = {**chosen, name: rule}
            d, lw, missed = [], [], 0
            for case in cases:
                mask = postprocess(case.pred, scheme, trial, case.spacing)[i]
                d.append(dice(mask, case.gt[i]))
                lesion, lost = lesion_dice_missed(mask, case.gt[i], case.spacing)
                lw.append(lesion)
                missed += lost
            row = {
                "region": name,
                "rule": rule.describe(),
                "dice": float(np.mean(d)),
                "lesion_dice": float(np.mean(lw)),
                "missed_lesions": missed,
            }
            table.append(row)
            scored.append(Candidate(row["dice"] + row["lesion_dice"], missed, rule))
        chosen[name] = pick(scored)
        for row in table[-len(scored) :]:
            row["chosen"] = "yes" if row["rule"] == chosen[name].describe() else ""
    return {name: chosen[name] for name in names}, table
