"""DICOM series input: one case folder holds one series per channel, read with SimpleITK's GDCM series reader.

A channel of a DICOM case is referenced as `<case folder>::<channel name>`; the series is chosen when the case is
read, so a bad case (mixed series, missing or uneven slices, gantry tilt, non-image modality) is one error that
names it while the batch goes on. Single-channel tasks take the folder's only series; multi-channel tasks match
each channel to the series whose SeriesDescription names it (`t1ce` also matches "T1 post", "T1+C").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError

REF_SEP = "::"
# LPS (DICOM patient coordinates) -> RAS (NIfTI / nibabel world), as a left multiplication of the affine.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_MODALITIES = {"ct": {"CT"}, "default": {"MR"}}
SLICE_TOLERANCE = 0.1  # relative spread of slice gaps that still counts as evenly spaced
TILT_TOLERANCE_MM = 0.05
ALIASES = {"t1ce": ("t1ce", "t1c", "t1 post", "t1+c", "t1gd", "t1 gd", "post"), "flair": ("flair",)}


@dataclass(frozen=True)
class Series:
    """One DICOM series of a case folder: its files in slice order and the header facts medseg checks."""

    uid: str
    files: tuple[str, ...]
    description: str
    modality: str


def series_ref(folder: Path, channel: str) -> str:
    return f"{folder}{REF_SEP}{channel}"


def is_series_ref(path: str) -> bool:
    return REF_SEP in path


def split_ref(ref: str) -> tuple[Path, str]:
    folder, channel = ref.rsplit(REF_SEP, 1)
    return Path(folder), channel


def has_dicom_file(path: Path) -> bool:
    """Whether a file starts with the DICOM preamble ('DICM' at byte 128), whatever its extension."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def has_dicom(folder: Path) -> bool:
    """Whether any of the first files under a folder is DICOM."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return any(has_dicom_file(p) for _, p in zip(range(20), files, strict=False))


def list_series(folder: Path) -> list[Series]:
    """Every image series under `folder` (any depth), files sorted along the slice normal by GDCM."""
    import pydicom
    import SimpleITK as sitk

    out = []
    dirs = sorted({p.parent for p in folder.rglob("*") if p.is_file()})
    for d in dirs:
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d)):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid)
            head = pydicom.dcmread(files[0], stop_before_pixels=True)
            out.append(Series(uid, tuple(files), str(head.get("SeriesDescription", "")), str(head.get("Modality", ""))))
    return out


def _matches(description: str, channel: str) -> bool:
    words = re.sub(r"[^a-z0-9+]+", " ", description.lower()).strip()
    names = ALIASES.get(channel, (channel,))
    if channel == "t1":  # plain T1 must not match the contrast-enhanced series
        return bool(re.search(r"\bt1\b", words)) and not any(a in words for a in ALIASES["t1ce"][1:])
    return any(re.search(rf"\b{re.escape(n)}\b", words) for n in names)


def choose_series(series: list[Series], channel: str, n_channels: int, case_id: str, folder: Path) -> Series:
    """The series that is `channel`: the only one for single-channel tasks, else matched by description."""
    if not series:
        raise DataError("no DICOM image series found", path=str(folder), case=case_id, hint="one series per channel")
    if n_channels == 1:
        if len(series) > 1:
            names = ", ".join(s.description or s.uid[-8:] for s in series)
            raise DataError(
                f"{len(series)} DICOM series in one case folder ({names})",
                path=str(folder),
                case=case_id,
                hint="put one series per case folder",
            )
        return series[0]
    found = [s for s in series if _matches(s.description, channel)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DataError(
            f"{what} series whose description names channel {channel}",
            path=str(folder),
            case=case_id,
            hint="name each series by its channel in SeriesDescription (e.g. 'T1', 'T1 post', 'T2', 'FLAIR')",
        )
    return found[0]


def check_slices(series: Series, case_id: str) -> None:
    """Refuse uneven slice gaps (missing slices) and gantry tilt: both break the regular grid an affine describes."""
    import pydicom

    if len(series.files) < 2:
        raise DataError("a single-slice series is not a volume", path=series.files[0], case=case_id)
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    try:
        orientations = np.asarray([h.ImageOrientationPatient for h in heads], float)
        positions = np.asarray([h.ImagePositionPatient for h in heads], float)
    except (AttributeError, ValueError):
        raise DataError("slices lack ImagePositionPatient / ImageOrientationPatient", case=case_id) from None
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise DataError(
            "slices of different orientations (a localizer or radial series), not a volume",
            path=str(Path(series.files[0]).parent),
            case=case_id,
            hint="pass the volume series",
        )
    cosines = orientations[0].reshape(2, 3)
    normal = np.cross(cosines[0], cosines[1])
    steps = np.diff(positions, axis=0)
    gaps = steps @ normal
    if np.abs(steps - np.outer(gaps, normal)).max() > TILT_TOLERANCE_MM:
        raise DataError(
            "gantry tilt (slices shifted in-plane from one to the next)",
            path=str(Path(series.files[0]).parent),
            case=case_id,
            hint="resample the series to an untilted grid first (e.g. dcm2niix corrects tilt)",
        )
    if gaps.min() <= 0 or gaps.max() - gaps.min() > SLICE_TOLERANCE * np.median(gaps):
        raise DataError(
            f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): missing or duplicated slices",
            path=str(Path(series.files[0]).parent),
            case=case_id,
            hint="export the complete series",
        )


def read_series(series: Series, channel: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(volume (X, Y, Z) float32 in stored units after rescale (HU for CT), RAS affine) of one checked series."""
    import SimpleITK as sitk

    allowed = IMAGE_MODALITIES.get(channel, IMAGE_MODALITIES["default"])
    if series.modality not in allowed:
        raise DataError(
            f"series modality {series.modality or '?'} where channel {channel} expects {'/'.join(sorted(allowed))}",
            path=str(Path(series.files[0]).parent),
            case=case_id,
            hint="pass the image series of that modality",
        )
    check_slices(series, case_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"unreadable DICOM series ({str(exc).splitlines()[-1][:120]})", case=case_id) from None
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)
    return data, sitk_affine(image)


def sitk_affine(image) -> np.ndarray:
    """The RAS voxel-to-world affine of a SimpleITK image (which lives in LPS)."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), float)
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def case_series(refs: tuple[str, ...], case_id: str) -> list[Series]:
    """The series of each channel reference of a case, in channel order."""
    folder, _ = split_ref(refs[0])
    series = list_series(folder)
    return [choose_series(series, split_ref(r)[1], len(refs), case_id, folder) for r in refs]


def read_dicom_channels(refs: tuple[str, ...], case_id: str) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(volume, RAS affine, first file) per channel of a DICOM case, each series checked."""
    out = []
    for ref, series in zip(refs, case_series(refs, case_id), strict=True):
        data, affine = read_series(series, split_ref(ref)[1], case_id)
        out.append((data, affine, series.files[0]))
    return out


def find_dicom_cases(root: Path, channels: list[str], label_map: dict[str, int], layout: str = "dicom") -> list:
    """Each subfolder of `root` holding DICOM files is a case (its name is the case id); `root` itself is the one
    case when it holds DICOM files directly."""
    from medseg.core import Case

    folders = [root] if any(has_dicom_file(p) for p in root.iterdir() if p.is_file()) else []
    folders += [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and has_dicom(d)]
    n = len(channels)
    return [
        Case(d.name, tuple(series_ref(d, ch) for ch in channels), (None,) * n, None, label_map, layout) for d in folders
    ]
