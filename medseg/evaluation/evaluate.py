"""Evaluate a folder of predicted label maps against ground truth, per case and region."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.core import Case, Task
from medseg.data.layouts import strip_nifti
from medseg.errors import DataError, LabelValuesError
from medseg.evaluation.lesionwise import lesion_wise
from medseg.evaluation.metrics import METRICS, region_metrics
from medseg.io.nifti import AFFINE_TOL_MM, check_geometry, load_header, read_label
from medseg.transforms.labels import labels_to_regions


@dataclass
class EvalResult:
    rows: list[dict]
    unmatched_pred: list[str]
    unmatched_gt: list[str]
    failed: list[tuple[str, str]]


def evaluate_case(pred_path: Path | None, gt_case: Case, task: Task) -> dict:
    """Metrics for one case; predictions are in the ground truth's native label convention (no `pred_path`: a
    missing prediction, scored as an empty mask as the BraTS challenge does)."""
    scheme = task.scheme
    gt_img = load_header(gt_case.label, gt_case.id)
    shape, affine = gt_img.shape[:3], gt_img.affine
    gt = read_label(gt_case, shape, affine)
    pred = np.zeros_like(gt) if pred_path is None else _read_prediction(pred_path, gt_case, shape, affine)
    spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]
    p = labels_to_regions(pred, scheme, gt_case.label_map)
    g = labels_to_regions(gt, scheme, gt_case.label_map)
    row = {"id": gt_case.id, **region_metrics(p, g, scheme.region_names, spacing, task.empty_hd95_mm)}
    for i, name in enumerate(scheme.region_names):
        lw = lesion_wise(p[i], g[i], spacing)
        scores = (lw.dice, lw.hd95, lw.false_positives, lw.missed)
        row |= {f"{key}_{name.lower()}": value for key, value in zip(LESION_KEYS, scores, strict=True)}
    return row


LESION_KEYS = ("lesion_dice", "lesion_hd95", "lesion_fp", "lesion_missed")


def case_columns(task: Task) -> list[str]:
    """The columns of `evaluate_case`'s rows, for a CSV header when no case could be scored."""
    regions = [r.lower() for r in task.scheme.region_names]
    return ["id", *(f"{m}_{r}" for r in regions for m in METRICS), *(f"{k}_{r}" for r in regions for k in LESION_KEYS)]


def _read_prediction(pred_path: Path, gt_case: Case, shape, affine) -> np.ndarray:
    """The prediction's labels on the ground truth's voxel grid: as stored, or reordered when it holds the same
    voxels in another orientation (axes flipped or permuted, as another tool may write it); another grid fails."""
    pred_case = Case(gt_case.id, (), (), str(pred_path), gt_case.label_map, gt_case.layout)
    pred_img = load_header(str(pred_path), gt_case.id)
    ornt = _reorientation(pred_img.shape[:3], pred_img.affine, shape, affine)
    if ornt is None:
        # Checked here, against the ground truth, so the message names both; read_label's own check then passes.
        check_geometry(
            shape,
            affine,
            pred_img.shape[:3],
            pred_img.affine,
            str(pred_path),
            gt_case.id,
            "prediction",
            reference="the ground truth's",
            hint="predict on the images of this dataset (medseg predict writes the input's grid)",
        )
        return _prediction_labels(pred_case, shape, affine)
    return nib.orientations.apply_orientation(_prediction_labels(pred_case, pred_img.shape[:3], pred_img.affine), ornt)


def _prediction_labels(pred_case: Case, shape, affine) -> np.ndarray:
    """`read_label` for a prediction: values outside the dataset's map are the prediction's fault (a model of
    another label convention), not the dataset.json's, as the ground truth's hint would say."""
    try:
        return read_label(pred_case, shape, affine)
    except LabelValuesError as exc:
        raise DataError(
            f"prediction: {exc.message}",
            path=exc.path,
            case=exc.case,
            hint="evaluate predictions of a model trained on this dataset's label convention",
        ) from None


def _reorientation(shape, affine, ref_shape, ref_affine) -> np.ndarray | None:
    """The nibabel orientation transform that puts a (`shape`, `affine`) grid exactly onto the reference grid by
    flipping and permuting axes, or None when it is already that grid or no such transform exists."""
    if tuple(shape) == tuple(ref_shape) and np.allclose(affine, ref_affine, atol=AFFINE_TOL_MM):
        return None
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.io_orientation(ref_affine))
    moved_shape = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        moved_shape[int(to)] = shape[axis]
    moved_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    exact = tuple(moved_shape) == tuple(ref_shape) and np.allclose(moved_affine, ref_affine, atol=AFFINE_TOL_MM)
    return ornt if exact else None


def evaluate_folder(
    pred_dir: Path,
    gt_cases: Sequence[Case],
    task: Task,
    on_case: Callable[[str], None] | None = None,
    missing_as_empty: bool = False,
) -> EvalResult:
    """Match `<pred_dir>/<case>.nii.gz` (or `.nii`) to ground-truth cases by id and evaluate each pair; with
    `missing_as_empty` a labelled case without prediction is scored as an empty prediction (still listed in
    `unmatched_gt`), once at least one prediction was scored: empty masks alone would score no model."""
    found: dict[str, list[Path]] = {}
    for path in sorted(pred_dir.glob("[!.]*.nii*")):  # hidden files: an interrupted run's temporary writes
        if (cid := strip_nifti(path.name)) is not None and not path.is_dir():
            found.setdefault(cid, []).append(path)
    preds = {cid: paths[0] for cid, paths in found.items()}
    labelled = {c.id: c for c in gt_cases if c.label}
    missing = sorted(set(labelled) - set(preds))
    rows, failed = [], []
    for cid in sorted(set(labelled)):
        if len(found.get(cid, [])) > 1:  # which one is the prediction is the user's to say
            failed.append((cid, str(DataError(f"both {cid}.nii and {cid}.nii.gz", case=cid, hint="remove one"))))
            del preds[cid]

    def score(cid: str) -> None:
        try:
            rows.append(evaluate_case(preds.get(cid), labelled[cid], task))
        except DataError as exc:
            failed.append((cid, str(exc)))
        if on_case:
            on_case(cid)

    for cid in sorted(set(preds) & set(labelled)):
        score(cid)
    if missing_as_empty and rows:
        for cid in missing:
            score(cid)
        rows.sort(key=lambda row: row["id"])
    return EvalResult(rows, sorted(set(preds) - set(labelled)), missing, failed)


def near_misses(unmatched_pred: Sequence[str], unmatched_gt: Sequence[str]) -> dict[str, str]:
    """Predictions named almost like a labelled case without prediction (`<id>_pred`, `<id>_0000`, `seg_<id>`, a
    lower-case id, or the id's number alone), each with that case's id: what the file was probably meant to be."""
    found = {}
    for pred in unmatched_pred:
        p = pred.lower()
        candidates = [g for g in unmatched_gt if _holds_whole(p, g.lower()) or _ends_with_part(g.lower(), p)]
        if len(candidates) == 1:  # an ambiguous name is not a guess worth printing
            found[pred] = candidates[0]
    return found


def _holds_whole(name: str, case_id: str) -> bool:
    """`case_id` inside `name` between separators (`case_12` does not hold `case_1`)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(case_id)}(?![a-z0-9])", name) is not None


def _ends_with_part(case_id: str, name: str) -> bool:
    """`name` is the tail of `case_id` after a separator (`00003` of `brats2021_00003`, not of `..._00013`)."""
    if len(name) < 3 or not case_id.endswith(name):
        return False
    return len(case_id) == len(name) or not case_id[-len(name) - 1].isalnum()


def summarise(rows: Sequence[dict]) -> dict[str, dict[str, float | None]]:
    """mean / median / std of every metric column (the sample std, ddof 1, as pandas and papers' "mean ± SD"; None
    for one case, where it is undefined: 0 read as "no spread")."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if k != "id"]
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=float)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else None
        out[k] = {"mean": float(vals.mean()), "median": float(np.median(vals)), "std": std}
    return out
