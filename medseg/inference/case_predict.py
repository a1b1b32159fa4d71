"""One case from files to a native-label volume on the input's exact grid, in three steps that a folder run
spreads over processes: `prepare_case` (read + preprocess, CPU workers), `predict_case` (the network, on the device),
`finish_case` (post-processing, back onto the input grid, native labels; CPU workers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import InferConfig, RegionRule
from medseg.core import Case, LabelScheme
from medseg.errors import DataError, ModelFileError
from medseg.inference.engines import Engine
from medseg.inference.sliding import sliding_predict
from medseg.inference.window_batch import sliding_predict_many, window_slices
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import placement_header, placement_notes, read_case
from medseg.transforms import on_device
from medseg.transforms.geometry import GridMeta, restore_grid
from medseg.transforms.labels import region_masks, regions_to_labels
from medseg.transforms.postprocess import postprocess
from medseg.transforms.preprocess import Preprocessed, PreprocessPlan, preprocess_case
from medseg.transforms.resample import resample_channels, resample_probabilities


@dataclass
class PreparedCase:
    """A case ready for the network: preprocessed on the host (`pre`; its image a tensor when it crossed processes
    through shared memory), or only decoded (`raw`, (M, X, Y, Z) in the files' own small integer type or float32)
    when the device preprocesses and restores it (`on_device`, `transforms.on_device`); the input's affine and the
    channels that were missing (zero-filled)."""

    affine: np.ndarray
    missing: tuple[int, ...]
    pre: Preprocessed | None = None
    raw: np.ndarray | torch.Tensor | None = None
    on_device: bool = False
    notes: tuple[str, ...] = ()  # header fields that disagree (`placement_notes`), warned about with the case

    def pin_memory(self) -> PreparedCase:
        """Page-locked input for an asynchronous copy to the GPU (called by the DataLoader's pinning thread)."""
        if self.pre is not None and isinstance(self.pre.image, torch.Tensor):
            self.pre.image = self.pre.image.pin_memory()
        if isinstance(self.raw, torch.Tensor):
            self.raw = self.raw.pin_memory()
        return self


@dataclass
class NetworkOutput:
    """What the network decided for a case and what is needed to finish it elsewhere: region masks (R, x, y, z)
    bool on its cropped RAS grid and probabilities if kept, or the finished `labels` (X, Y, Z) uint8 on the input's
    grid when the device restored them; the grid steps to undo, the input's affine."""

    regions: np.ndarray | None
    probabilities: np.ndarray | None
    meta: GridMeta
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class LabelSpec:
    """How region masks become the case's labels: the model's scheme and the post-processing rules (small and
    picklable: it travels with every case to the writer processes instead of the model bundle)."""

    scheme: LabelScheme
    rules: dict[str, RegionRule]

    @classmethod
    def of(cls, bundle: ModelBundle, infer: InferConfig) -> LabelSpec:
        return cls(bundle.scheme, dict(infer.postprocess or {}))


@dataclass
class CasePrediction:
    """Labels (X, Y, Z) uint8 in the case's native convention, optional probabilities (R, X, Y, Z),
    and the warnings a user should see (empty prediction, no zero background, unusual CT intensities)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)


# BraTS bundles whose norm_stats lack the training zero fraction were trained on skull-stripped volumes, where at
# least half the voxels are background 0 (~85 %); other tasks' older bundles are not judged (MRI may have no zero
# background, e.g. prostate).
ASSUMED_ZERO_FRACTION = {"brats": 0.5}


# No CT or MRI volume is under 2 cm across: such an extent is a header's voxel size in the wrong unit (metres or
# microns read as mm), which gives a nonsense mask (every voxel one class) without failing.
MIN_EXTENT_MM = 20.0


def extent_warnings(meta: GridMeta) -> list[str]:
    """A warning when the image's physical extent (RAS shape x voxel size, mm) is under `MIN_EXTENT_MM` on every
    axis."""
    extent = [n * s for n, s in zip(meta.ras_shape, meta.spacing, strict=True)]
    if max(extent) >= MIN_EXTENT_MM:
        return []
    mm = " x ".join(f"{v:.3g}" for v in extent)
    voxel = "x".join(f"{v:.3g}" for v in meta.spacing)
    return [f"the image spans only {mm} mm (voxels of {voxel} mm): check the header's voxel size (pixdim) and units"]


def input_warnings(stats: np.ndarray, bundle: ModelBundle, missing: tuple[int, ...]) -> list[str]:
    """What makes a mask unreliable without failing the case, for the present channels:

    - almost no zero background where training had one (under a quarter of its zero fraction): a shifted
      background (scl_inter, CT-like air at -1000) or a volume that is not skull-stripped puts the whole volume in
      the foreground crop and z-score, and the mask comes out wrong with nothing else to show it (one warning
      naming every such channel);
    - for channels normalised with fixed numbers (CT), a mean far from training (> 3 training SDs or off by more
      than 5x). A z-scored channel is left alone there: a global rescale (scl_slope, uint8 export) is harmless.
    """
    out, no_background = [], []
    norms = bundle.preprocess.intensity
    for i, (name, train) in enumerate(zip(bundle.channels, bundle.norm_stats, strict=True)):
        if i in missing:
            continue
        zscored = norms is None or norms[i].kind == "zscore"
        measured = len(train) > 2
        expected = train[2] if measured else ASSUMED_ZERO_FRACTION.get(bundle.task, 0.0)
        if zscored and bundle.preprocess.crop_foreground and stats[i][2] < 0.25 * expected:  # CT: air is no problem
            no_background.append((name, float(stats[i][2]), expected if measured else None))
        train_mean, train_std = train[:2]
        if zscored or train_mean == 0:
            continue
        mean = float(stats[i][0])
        if abs(mean - train_mean) > 3 * max(train_std, 1e-6) or not 0.2 <= mean / train_mean <= 5:
            out.append(f"{name} intensities unusual (mean {mean:.3g} vs training {train_mean:.3g})")
    if no_background:
        out.insert(0, _no_background_warning(no_background))
    return out


def _no_background_warning(channels: list[tuple[str, float, float | None]]) -> str:
    """One line for every channel (name, zero fraction, training zero fraction if the bundle measured it)."""
    many = len(channels) > 1
    zeros = ("at most " if many else "") + f"{max(z for _, z, _ in channels):.1%}"
    measured = [t for _, _, t in channels if t is not None]
    trained = (
        ("at least " if len(set(measured)) > 1 else "") + f"{min(measured):.0%} in training"
        if measured
        else "background 0 expected"
    )
    return (
        f"{', '.join(n for n, _, _ in channels)}: almost no zero background ({zeros} of voxels are 0; {trained}): "
        "the crop and z-score span the whole volume, so the mask is unreliable (set the background to 0: "
        "skull-strip, or check the header's scl_inter)"
    )


def modality_mask(missing: tuple[int, ...], case: Case, engine: Engine, allow_missing: bool) -> torch.Tensor | None:
    if not missing:
        return None
    names = ", ".join(case.images[i].rsplit("/", 1)[-1] for i in missing)
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
            hint="use a cross-modal model (transunet3d, swinunet3d or segformer3d with cross_modal=True)",
        )
    mask = torch.ones(len(case.images), dtype=torch.bool)
    mask[list(missing)] = False
    return mask


def prepare_case(case: Case, plan: PreprocessPlan, allow_missing: bool, on_device: bool = False) -> PreparedCase:
    """Read and validate the case's files, then preprocess as in training (RAS, crop, normalise, resample), or
    leave that to the device (`on_device`: only decoded, in the files' own integer type)."""
    vols = read_case(case, with_label=False, allow_missing=allow_missing, native_dtype=on_device)
    header = placement_header(case)
    notes = tuple(placement_notes(header)) if header is not None else ()
    if on_device:
        return PreparedCase(vols.affine, vols.missing, raw=vols.image, on_device=True, notes=notes)
    return PreparedCase(vols.affine, vols.missing, pre=preprocess_case(vols, case, None, plan), notes=notes)


def network_input(prepared: PreparedCase, plan: PreprocessPlan, device: torch.device) -> Preprocessed:
    """The case's preprocessed input; a decoded-only case is preprocessed on `device` first and keeps the result
    in place of its raw volume (freed), so it is done once."""
    if prepared.pre is None:
        raw = torch.as_tensor(prepared.raw).to(device, non_blocking=True)
        prepared.pre, prepared.raw = on_device.preprocess(raw, prepared.affine, plan), None
    return prepared.pre


def window_count(prepared: PreparedCase, bundle: ModelBundle, infer: InferConfig, device: torch.device) -> int:
    """How many sliding windows the case's input needs (after preprocessing it, on the device if it goes there)."""
    image = network_input(prepared, bundle.preprocess, device).image
    return len(window_slices(image.shape[1:], bundle.patch_size, infer.overlap))


def predict_case(
    prepared: PreparedCase,
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
) -> NetworkOutput:
    """Sliding window and threshold: the region masks on the cropped grid (the step that needs the device).

    `infer` holds the sliding-window settings and threshold (the bundle's, with any per-run overrides). Kept
    probabilities are the network's, before post-processing. A case prepared without preprocessing (`raw`) is
    preprocessed on `device`, and unless probabilities are kept or components post-processed (scipy, on the host)
    its labels are restored there too, so only the uint8 label volume comes back.
    """
    mask = modality_mask(prepared.missing, case, engine, allow_missing)
    pre = network_input(prepared, bundle.preprocess, device)
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
        keep_on_device=prepared.on_device,
    )
    return _decide(probs, prepared, case, bundle, infer, keep_probabilities, device)


def predict_small_cases(
    items: Sequence[tuple[PreparedCase, Case]],
    engine: Engine,
    bundle: ModelBundle,
    infer: InferConfig,
    *,
    device: torch.device,
    allow_missing: bool = False,
    keep_probabilities: bool = False,
) -> list[NetworkOutput]:
    """`predict_case` for several cases (no TTA) whose windows share forward passes
    (`inference.window_batch`): for cases with fewer windows than the window batch."""
    masks = [modality_mask(prepared.missing, case, engine, allow_missing) for prepared, case in items]
    images = [network_input(prepared, bundle.preprocess, device).image for prepared, _ in items]
    probs = sliding_predict_many(
        engine,
        images,
        bundle.patch_size,
        overlap=infer.overlap,
        mode=infer.mode,
        sw_batch_size=infer.sw_batch_size,
        device=device,
        modality_masks=masks,
        exclusive=bundle.scheme.exclusive,
    )
    return [
        _decide(p, prepared, case, bundle, infer, keep_probabilities, device)
        for p, (prepared, case) in zip(probs, items, strict=True)
    ]


def _decide(
    probs: torch.Tensor,
    prepared: PreparedCase,
    case: Case,
    bundle: ModelBundle,
    infer: InferConfig,
    keep_probabilities: bool,
    device: torch.device,
) -> NetworkOutput:
    """Threshold the case's probabilities: the finished labels when the device restores them (no kept
    probabilities, no components to clean on the host), else region masks on the cropped grid."""
    if not torch.isfinite(probs).all():  # else NaN reads as "below threshold": an empty mask, as if healthy
        raise ModelFileError(
            "the network output NaN or Inf on this case",
            case=case.id,
            hint="a model whose training diverged must be retrained; with another engine, try --engine torch",
        )
    pre = prepared.pre
    warnings = [*prepared.notes, *extent_warnings(pre.meta), *input_warnings(pre.stats, bundle, prepared.missing)]
    components = any(rule.kind != "none" for rule in (infer.postprocess or {}).values())
    if prepared.on_device and not keep_probabilities and not components:
        labels = _labels_on_device(probs, pre.meta, infer.threshold, bundle.scheme, case.label_map)
        return NetworkOutput(None, None, pre.meta, prepared.affine, warnings, labels)
    regions, kept = _on_crop_grid(probs, pre, infer.threshold, bundle.scheme.exclusive, keep_probabilities, device)
    return NetworkOutput(regions, kept, pre.meta, prepared.affine, warnings)


def finish_case(out: NetworkOutput, case: Case, spec: LabelSpec) -> CasePrediction:
    """Post-process the regions, put them back onto the input grid and paint the case's native labels.

    Uncrop + axis permutation/flip, no interpolation: thresholding commutes with these exact index operations, so
    only kept probabilities are inverted as floats (4x less to move). Labels the device already restored are only
    checked for emptiness.
    """
    warnings = list(out.warnings)
    if out.labels is not None:
        if not out.labels.any():
            warnings.append("empty prediction (no region above threshold)")
        return CasePrediction(out.labels, None, out.affine, warnings)
    regions = postprocess(out.regions, spec.scheme, spec.rules, out.meta.spacing) if spec.rules else out.regions
    full = restore_grid(out.probabilities, out.meta, fill=0.0) if out.probabilities is not None else None
    labels = regions_to_labels(restore_grid(regions, out.meta, fill=False), spec.scheme, case.label_map)
    if not labels.any():
        warnings.append("empty prediction (no region above threshold)")
    return CasePrediction(labels, full, out.affine, warnings)


def _on_crop_grid(
    probs: torch.Tensor, pre: Preprocessed, threshold: float, exclusive: bool, keep: bool, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """(region masks, probabilities if `keep`) on the input's cropped RAS grid: a resampled case's probabilities
    are interpolated back first and decided there, so masks and post-processing live at the input's own spacing.
    Sigmoid regions whose probabilities are not kept are cut one at a time while interpolating (less memory);
    softmax classes and kept probabilities are interpolated once, as floats."""
    if not pre.meta.resampled:
        p = probs
    elif exclusive or keep:
        p = torch.from_numpy(resample_channels(probs, pre.meta.crop_shape, device))
    else:
        return resample_probabilities(probs, pre.meta.crop_shape, threshold, device), None
    return region_masks(p, threshold, exclusive).cpu().numpy(), p.cpu().numpy() if keep else None


def _labels_on_device(
    probs: torch.Tensor, meta: GridMeta, threshold: float, scheme: LabelScheme, label_map: dict[str, int]
) -> np.ndarray:
    """Probabilities on the (resampled) cropped grid -> the native label volume on the input's grid, every step
    where `probs` lives: back to the crop's own spacing, threshold, paint, uncrop, un-permute."""
    if meta.resampled:
        probs = F.interpolate(probs[None], size=meta.crop_shape, mode="trilinear", align_corners=False)[0]
    masks = region_masks(probs, threshold, scheme.exclusive)
    labels = on_device.regions_to_labels(masks, scheme, label_map)
    return on_device.restore_grid(labels[None], meta)[0].cpu().numpy()
