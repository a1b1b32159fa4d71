"""After training: the post-processing the model will carry, chosen (or checked) on the validation cases.

The best weights predict every validation case once; `evaluation.postprocess_search` picks a rule per region
unless the config fixed them (`infer.postprocess`); region Dice and BraTS 2023 lesion-wise Dice are reported with
and without the rules, so the effect is on record next to the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from medseg.config import InferConfig, RegionRule
from medseg.core import LabelScheme
from medseg.evaluation.lesionwise import lesion_dice
from medseg.evaluation.metrics import dice
from medseg.evaluation.postprocess_search import ScoredCase, search_postprocess
from medseg.training.validate import predicted_masks
from medseg.transforms.postprocess import postprocess


@dataclass
class PostprocessChoice:
    """Rules per region, the search table (empty when the config fixed the rules) and `val_*` metrics."""

    rules: dict[str, RegionRule]
    table: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def _summary(cases: Sequence[ScoredCase], scheme: LabelScheme, rules: dict[str, RegionRule], prefix: str) -> dict:
    out: dict[str, list[float]] = {}
    for case in cases:
        # with no rules too: nested as predict's painting nests them, or "before" would score masks predict never
        # writes (WT raw 0.0938 against 0.0843 after a rule of "none")
        masks = postprocess(case.pred, scheme, rules, case.spacing)
        for i, name in enumerate(scheme.region_names):
            out.setdefault(f"{prefix}dice_{name.lower()}", []).append(dice(masks[i], case.gt[i]))
            lesion = lesion_dice(masks[i], case.gt[i], case.spacing)
            out.setdefault(f"{prefix}lesion_dice_{name.lower()}", []).append(lesion)
    return {k: float(np.mean(v)) for k, v in out.items()}


def predict_validation(
    model: torch.nn.Module,
    val_items: Sequence[dict],
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
    exclusive: bool = False,
) -> list[ScoredCase]:
    """The validation cases' raw masks and truth, predicted again (when training kept none: DDP, many cases)."""
    return [
        ScoredCase(pred, np.asarray(pre.regions, bool), pre.meta.model_spacing)
        for _item, pre, pred in predicted_masks(model, val_items, roi, infer, device, amp, exclusive)
    ]


def choose_postprocess(cases: Sequence[ScoredCase], scheme: LabelScheme, infer: InferConfig) -> PostprocessChoice:
    """Rules for `infer.postprocess is None` searched on the validation `cases`, else the configured ones
    evaluated on them."""
    if not cases:
        return PostprocessChoice(dict(infer.postprocess or {}))
    if infer.postprocess is None:
        rules, table = search_postprocess(cases, scheme)
    else:
        rules, table = dict(infer.postprocess), []
    metrics = {**_summary(cases, scheme, {}, "val_raw_"), **_summary(cases, scheme, rules, "val_pp_")}
    return PostprocessChoice(rules, table, metrics)
