"""DICOM series input: one case folder holds one series per channel, read with SimpleITK's GDCM series reader.

A channel of a DICOM case is referenced as `<case folder>::<channel name>`; the series is chosen when the case is
read, so a bad case (mixed series, missing or uneven slices, gantry tilt, non-image modality) is one error that
names it while the batch goes on. Single-channel tasks take the folder's only series; multi-channel tasks match
each channel to the series whose SeriesDescription names it ("AX T1 C+" is t1ce, "T2 FLAIR" is flair).
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
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # the media directory a DICOM CD or export carries beside the series
DICOM_SUFFIXES = {".dcm", ".ima"}  # suffixes that mark a file as DICOM (many exports use none, or UIDs)
T1CE_NAMES = ("t1ce", "t1c", "t1+c", "t1gd", "t1+gd", "t1 post")
NEGATIONS = ("pre", "non", "no", "without", "wo", "w o", "ohne", "vor", "nativ")  # German sites: "t1 ohne KM"
# beside "t1": contrast-enhanced ("km": Kontrastmittel, as German Siemens sites name it)
CONTRAST_WORDS = ("post", "c+", "+c", "gd", "+gd", "gad", "contrast", "ce", "km")
FLAIR_NAMES = ("flair", "dark fluid")  # Siemens: "t2_tirm_tra_dark-fluid"


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


def list_series(folder: Path, case_id: str) -> list[Series]:
    """Every image series under `folder` (any depth), files sorted along the slice normal by GDCM. A slice file
    GDCM could not read is an error: GDCM leaves it out silently, and a missing end slice looks like a whole series."""
    import pydicom
    import SimpleITK as sitk

    out = []
    dirs = sorted({p.parent for p in folder.rglob("*") if p.is_file()})
    for d in dirs:
        found = []
        for uid in _series_ids(d):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid)
            head = pydicom.dcmread(files[0], stop_before_pixels=True)
            found.append(
                Series(uid, tuple(files), str(head.get("SeriesDescription", "")), str(head.get("Modality", "")))
            )
        listed = {Path(f).resolve() for s in found for f in s.files}
        uids, slice_names = {s.uid for s in found}, {_name_pattern(Path(f)) for s in found for f in s.files}
        others = (p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.resolve() not in listed)
        for path in sorted(others):
            problem = _unread_slice(path, uids, slice_names)
            if problem:
                raise DataError(
                    f"unreadable DICOM file ({problem})",
                    path=str(path),
                    case=case_id,
                    hint="export the series again, or remove the file if it is not part of it",
                )
        out += found
    return _joined_across_folders(out)


def _joined_across_folders(found: list[Series]) -> list[Series]:
    """One series per SeriesInstanceUID: an export that split a series' slices over two folders (GDCM lists each
    folder's part) was read as two series naming one channel. The parts' slices are re-sorted along the normal."""
    import pydicom

    parts: dict[str, list[Series]] = {}
    for series in found:
        parts.setdefault(series.uid, []).append(series)
    out = []
    for uid, split in parts.items():
        if len(split) == 1:
            out.append(split[0])
            continue
        files = [f for part in split for f in part.files]
        heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        try:
            cosines = np.asarray(heads[0].ImageOrientationPatient, float).reshape(2, 3)
            z = [float(np.dot(h.ImagePositionPatient, np.cross(cosines[0], cosines[1]))) for h in heads]
        except (AttributeError, ValueError):  # no geometry to sort by: check_slices names the problem
            z = list(range(len(files)))
        ordered = tuple(f for _, f in sorted(zip(z, files, strict=True)))
        out.append(Series(uid, ordered, split[0].description, split[0].modality))
    return out


def _series_ids(folder: Path) -> tuple[str, ...]:
    """GDCM's series ids of one folder, without ITK's "No Series were found" on stderr for a folder of notes (it
    lands in logs away from its case)."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _name_pattern(path: Path) -> str:
    """A file name with its numbers masked: slices of one series share it (IM_0001, 1.3.12.2.1107.5.2.32.2012)."""
    return re.sub(r"\d+", "#", path.name)


def _unread_slice(path: Path, uids: set[str], slice_names: set[str]) -> str | None:
    """Why a file GDCM left out looks like a broken slice (empty, truncated, a header pydicom cannot parse), or None
    for files that are not slices (notes, hidden files, a DICOMDIR, a DICOM-SEG or report of another series). A file
    named like the series' slices (`slice_names`, `_name_pattern`) or like DICOM (.dcm, .ima) is a slice."""
    import pydicom

    named_like_slice = path.suffix.lower() in DICOM_SUFFIXES or _name_pattern(path) in slice_names
    if path.stat().st_size == 0:
        return "empty file" if named_like_slice else None
    if not has_dicom_file(path):
        return "no DICOM header" if named_like_slice else None
    try:
        head = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a cut or garbled header
        return f"header unreadable: {type(exc).__name__}"
    if head.get("SeriesInstanceUID") in uids:
        return "a slice of this series the reader rejected: truncated pixel data?"
    sop_class = str(head.get("file_meta", {}).get("MediaStorageSOPClassUID", ""))
    if "SeriesInstanceUID" not in head and sop_class != DICOMDIR_SOP_CLASS:
        return "header cut short: no SeriesInstanceUID"
    return None


def _has(words: str, term: str) -> bool:
    """`term` as whole words of a normalised description ('c+' included: `\\b` fails next to '+')."""
    return re.search(rf"(?<![a-z0-9]){re.escape(term)}(?![a-z0-9])", words) is not None


def _matches(description: str, channel: str) -> bool:
    """Whether a SeriesDescription names `channel`, in the ways scanners and sites write it: 'AX T1 C+',
    'T1 post', 'T1+Gd' are T1ce; 'T2 FLAIR' and 'T2-FLAIR' are FLAIR, not T2; 'T1 FLAIR' is T1-weighted; 'T1W_3D',
    'T2W_TSE' (Philips) are T1 and T2; 'T1 pre-contrast', 'T1 W/O Gd' are T1; 'T2*' and 'PD/T2' are not T2;
    Siemens' 't2_tirm_tra_dark-fluid' is FLAIR and 't1_mprage_tra_KM' T1ce."""
    lower = description.lower()
    words = re.sub(r"\bt([12])w", r"t\1", re.sub(r"[^a-z0-9+]+", " ", lower)).strip()  # Philips: T1W_3D, T2W_TSE
    star = re.search(r"t2\s*(\*|star)", lower) is not None  # T2* (gradient echo): another contrast than T2
    negated = any(_has(words, n) for n in NEGATIONS)  # "T1 pre-contrast", "T1 W/O Gd": plain T1
    contrast = any(_has(words, a) for a in CONTRAST_WORDS) and not negated
    t1ce = any(_has(words, a) for a in T1CE_NAMES) or (_has(words, "t1") and contrast)
    if channel == "t1":
        return _has(words, "t1") and not t1ce
    if channel == "t1ce":
        return t1ce
    flair = any(_has(words, f) for f in FLAIR_NAMES)
    if channel == "t2":
        return _has(words, "t2") and not (flair or _has(words, "pd") or star)
    if channel == "flair":
        return flair and not _has(words, "t1")
    return _has(words, channel)


def choose_series(
    series: list[Series], channel: str, n_channels: int, case_id: str, folder: Path, optional: bool = False
) -> Series | None:
    """The series that is `channel`: the only one for single-channel tasks, else matched by description; None for
    an `optional` channel no series names (a missing modality)."""
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
    if optional and not found:
        return None
    if len(found) != 1:
        listed = "; ".join(f"'{s.description}'" if s.description else f"no description ({s.uid})" for s in series)
        what = f"no series names channel {channel}" if not found else f"{len(found)} series name channel {channel}"
        hint = "name each series by its channel in SeriesDescription (e.g. 'T1', 'T1 post', 'T2', 'FLAIR')"
        if len(series) == 1:  # most likely one series folder of a study, read as a case of its own
            hint = (
                f"a case folder holds all {n_channels} channels' series (CASE/t1/, CASE/t2/, ... or all in CASE/): "
                f"put a study's series folders in one case folder, or {hint}"
            )
        raise DataError(
            f"{what} in its SeriesDescription (the folder's series: {listed})",
            path=str(folder),
            case=case_id,
            hint=hint,
        )
    return found[0]


def check_slices(series: Series, case_id: str) -> None:
    """Refuse uneven slice gaps (missing slices) and gantry tilt: both break the regular grid an affine describes."""
    import pydicom

    if len(series.files) < 2:
        raise DataError(
            "a single-slice series is not a volume", path=series.files[0], case=case_id, hint="export the whole series"
        )
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
    z = positions @ normal
    order = np.argsort(z, kind="stable")
    sorted_gaps, names = np.diff(z[order]), [Path(series.files[k]).name for k in order]
    step = float(np.median(sorted_gaps))
    if gaps.min() <= 0 or gaps.max() - gaps.min() > SLICE_TOLERANCE * step:
        if sorted_gaps.min() < SLICE_TOLERANCE * step:
            i = int(np.argmin(sorted_gaps))
            what = f"two slices at one position ({names[i]}, {names[i + 1]})"
        elif sorted_gaps.max() - sorted_gaps.min() > SLICE_TOLERANCE * step:
            i = int(np.argmax(np.abs(sorted_gaps - step)))  # where the series breaks, in slice order
            what = f"a step of {sorted_gaps[i]:.3g} mm between {names[i]} and {names[i + 1]}"
            what += f" where slices are {step:.3g} mm apart"
        else:
            what = "slices read out of position order"
        raise DataError(
            f"uneven slice spacing: {what} (missing or duplicated slices)",
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


def case_series(refs: tuple[str, ...], case_id: str, allow_missing: bool = False) -> list[Series | None]:
    """The series of each channel reference of a case, in channel order (None: missing, with `allow_missing`)."""
    folder, _ = split_ref(refs[0])
    series = list_series(folder, case_id)
    optional = allow_missing and len(refs) > 1
    return [choose_series(series, split_ref(r)[1], len(refs), case_id, folder, optional) for r in refs]


def read_dicom_channels(
    refs: tuple[str, ...], case_id: str, allow_missing: bool = False
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(volume, RAS affine) per channel of a DICOM case, each series checked; None for a channel no series names,
    with `allow_missing`."""
    chosen = case_series(refs, case_id, allow_missing)
    if not any(chosen):
        raise DataError("no series names any channel of the model", path=str(split_ref(refs[0])[0]), case=case_id)
    return [
        read_series(series, split_ref(ref)[1], case_id) if series else None
        for ref, series in zip(refs, chosen, strict=True)
    ]


def _series_folders_of_one_study(names: list[str], channels: list[str]) -> bool:
    """Whether subfolders named like channels ('t1', 'T2_FLAIR', 't1_post') are the series of one study passed as
    the case, rather than cases: each names exactly one channel, no two the same one."""
    named = [[ch for ch in channels if _matches(name, ch)] for name in names]
    return len(channels) > 1 and all(len(n) == 1 for n in named) and len({n[0] for n in named}) == len(named) > 1


def find_dicom_cases(root: Path, channels: list[str], label_map: dict[str, int], layout: str = "dicom") -> list:
    """Each subfolder of `root` holding DICOM files is a case (its name is the case id); `root` itself is the one
    case when it holds DICOM files directly."""
    from medseg.core import Case

    # a DICOMDIR beside the case folders (a CD or PACS export) does not make the root a case
    slices = (p for p in root.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR")
    folders = [root] if any(has_dicom_file(p) for p in slices) else []
    folders += [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and has_dicom(d)]
    n = len(channels)
    if folders and root not in folders and _series_folders_of_one_study([d.name for d in folders], channels):
        folders = [root]
    return [
        Case(d.name, tuple(series_ref(d, ch) for ch in channels), (None,) * n, None, label_map, layout) for d in folders
    ]
