"""One case from files to a native-label volume on the input's exact grid: the pure prediction path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Case, CaseVolumes
from medseg.errors import DataError
from medseg.inference.engines import Engine
from medseg.inference.sliding import sliding_predict
from medseg.io.bundle import ModelBundle
from medseg.transforms.geometry import restore_grid
from medseg.transforms.labels import region_masks, regions_to_labels
from medseg.transforms.postprocess import postprocess
from medseg.transforms.preprocess import Preprocessed, preprocess_case
from medseg.transforms.resample import resample_channels, resample_probabilities


@dataclass
class CasePrediction:
    """Labels (X, Y, Z) uint8 in the case's native convention, optional probabilities (R, X, Y, Z),
    and the warnings a user should see (empty prediction, unusual intensities)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)


def intensity_warnings(stats: np.ndarray, bundle: ModelBundle, missing: tuple[int, ...]) -> list[str]:
    """Channels whose mean nonzero intensity is far from the training distribution (> 3 train SDs or
    off by more than 5x): the classic cause of silent empty predictions."""
    out = []
    for i, (name, (train_mean, train_std)) in enumerate(zip(bundle.channels, bundle.norm_stats, strict=True)):
        if i in missing or train_mean == 0:
            continue
        mean = float(stats[i][0])
        ratio = mean / train_mean if train_mean else float("inf")
        if abs(mean - train_mean) > 3 * max(train_std, 1e-6) or not 0.2 <= ratio <= 5:
            out.append(f"{name} intensities unusual (mean {mean:.3g} vs training {train_mean:.3g})")
    return out


def modality_mask(vols: CaseVolumes, case: Case, engine: Engine, allow_missing: bool) -> torch.Tensor | None:
    if not vols.missing:
        return None
    names = ", ".join(case.images[i].rsplit("/", 1)[-1] for i in vols.missing)
    if not allow_missing:
        raise DataError(
            f"missing channel file(s): {names}",
            case=case.id,
            hint="add them or pass --allow-missing-modality",
        )
    if not engine.supports_modality_mask:
        raise DataError(
            f"missing channel file(s) {names} and this model cannot mask modalities",
            case=case.id,
            hint="use a cross-modal model (transunet3d/swinunet3d with cross_modal=True)",
        )
    mask = torch.ones(len(case.images), dtype=torch.bool)
    mask[list(vols.missing)] = False
    return mask


def predict_case(
    vols: CaseVolumes,
    case: Case,
    engine: Engine,
    bundle: ModelBundle,
    infer: InferConfig,
    *,
    device: torch.device,
    allow_missing: bool = False,
    keep_probabilities: bool = False,
    single_pass: bool = False,
    stitch_on_cpu: bool = False,
) -> tuple[CasePrediction, Preprocessed]:
    """Preprocess, sliding-window, threshold, clean components, invert onto the input grid, paint native labels.

    `infer` holds the sliding-window settings, threshold and post-processing rules (the bundle's, with any
    per-run overrides). Saved probabilities are the network's, before post-processing.
    """
    mask = modality_mask(vols, case, engine, allow_missing)
    pre = preprocess_case(vols, case, None, bundle.preprocess)
    probs = sliding_predict(
        engine,
        pre.image,
        bundle.patch_size,
        overlap=infer.overlap,
        mode=infer.mode,
        sw_batch_size=infer.sw_batch_size,
        device=device,
        tta=infer.tta,
        single_pass=single_pass,
        modality_mask=mask,
        stitch_on_cpu=stitch_on_cpu,
        exclusive=bundle.scheme.exclusive,
    )
    regions, kept = _on_crop_grid(probs, pre, infer.threshold, bundle.scheme.exclusive, keep_probabilities, device)
    if infer.postprocess:
        regions = postprocess(regions, bundle.scheme, infer.postprocess, pre.meta.spacing)
    # Back onto the input grid: uncrop + axis permutation/flip, no interpolation. Thresholding commutes with
    # these exact index operations, so only saved probabilities are inverted as floats (4x less to move).
    full = restore_grid(kept, pre.meta, fill=0.0) if kept is not None else None
    labels = regions_to_labels(restore_grid(regions, pre.meta, fill=False), bundle.scheme, case.label_map)
    warnings = intensity_warnings(pre.stats, bundle, vols.missing)
    if not labels.any():
        warnings.append("empty prediction (no region above threshold)")
    return CasePrediction(labels, full, vols.affine, warnings), pre


def _on_crop_grid(
    probs: torch.Tensor, pre: Preprocessed, threshold: float, exclusive: bool, keep: bool, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """(region masks, probabilities if `keep`) on the input's cropped RAS grid: a resampled case's probabilities
    are interpolated back first and decided there, so masks and post-processing live at the input's own spacing.
    Sigmoid regions whose probabilities are not kept are cut one at a time while interpolating (less memory);
    softmax classes and kept probabilities are interpolated once, as floats."""
    if not pre.meta.resampled:
        p = probs.numpy()
    elif exclusive or keep:
        p = resample_channels(probs, pre.meta.crop_shape, device)
    else:
        return resample_probabilities(probs, pre.meta.crop_shape, threshold, device), None
    return region_masks(p, threshold, exclusive), p if keep else None
