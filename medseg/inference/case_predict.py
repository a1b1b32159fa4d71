"""One case from files to a native-label volume on the input's exact grid: the pure prediction path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medseg.data.task import Case
from medseg.errors import DataError
from medseg.inference.sliding import sliding_predict
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import CaseVolumes
from medseg.transforms.geometry import restore_grid
from medseg.transforms.labels import regions_to_labels
from medseg.transforms.preprocess import Preprocessed, preprocess_case


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


def modality_mask(vols: CaseVolumes, case: Case, model: torch.nn.Module, allow_missing: bool) -> torch.Tensor | None:
    if not vols.missing:
        return None
    names = ", ".join(case.images[i].rsplit("/", 1)[-1] for i in vols.missing)
    if not allow_missing:
        raise DataError(
            f"missing channel file(s): {names}",
            case=case.id,
            hint="add them or pass --allow-missing-modality",
        )
    if not getattr(model, "supports_modality_mask", False):
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
    model: torch.nn.Module,
    bundle: ModelBundle,
    *,
    overlap: float,
    sw_batch_size: int,
    device: torch.device,
    tta: bool = False,
    allow_missing: bool = False,
    keep_probabilities: bool = False,
    threshold: float = 0.5,
    amp: bool = True,
    single_pass: bool = False,
) -> tuple[CasePrediction, Preprocessed]:
    """Preprocess, sliding-window, invert on probabilities, then threshold and paint native labels."""
    mask = modality_mask(vols, case, model, allow_missing)
    pre = preprocess_case(vols, case, None, bundle.crop_foreground)
    probs = sliding_predict(
        model,
        pre.image,
        bundle.patch_size,
        overlap=overlap,
        mode=bundle.infer.get("mode", "gaussian"),
        sw_batch_size=sw_batch_size,
        device=device,
        amp=amp,
        tta=tta,
        single_pass=single_pass,
        modality_mask=mask,
    ).numpy()
    # Back onto the input grid: uncrop + axis permutation/flip, no interpolation. Thresholding commutes with
    # these exact index operations, so only saved probabilities are inverted as floats (4x less to move).
    full = restore_grid(probs, pre.meta, fill=0.0) if keep_probabilities else None
    mask = full > threshold if full is not None else restore_grid(probs > threshold, pre.meta, fill=False)
    labels = regions_to_labels(mask, bundle.scheme, case.label_map)
    warnings = intensity_warnings(pre.stats, bundle, vols.missing)
    if not labels.any():
        warnings.append("empty prediction (no region above threshold)")
    return CasePrediction(labels, full, vols.affine, warnings), pre
