"""Finding cases on disk: generic layout finders that task recipes parameterise, and detection."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medseg.core import Case, Layout
from medseg.errors import DataError
from medseg.io.dicom import has_dicom, is_series_ref, split_ref

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Image formats of other tools' datasets (nnU-Net's file_ending, grand-challenge, 3D Slicer) that medseg does not read.
OTHER_IMAGE_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff")
CONVERT_HINT = (
    'convert them to NIfTI, keeping their geometry, e.g. python -c "import SimpleITK as s, sys; '
    's.WriteImage(s.ReadImage(sys.argv[1]), sys.argv[2])" x.mha x.nii.gz'
)


def strip_nifti(name: str) -> str | None:
    """File name without its NIfTI suffix, or None if it is not a NIfTI file."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


class _NiftiFiles(dict):
    """A folder's NIfTI files by name without suffix. `read` refuses a name held by both `x.nii` and `x.nii.gz`
    (the `.nii.gz` was read silently, maybe a stale copy of the image the user edited): only when a case reads it,
    so twins in a folder that holds no case (a backup, predictions under the data root) stop nothing."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.twins: dict[str, Path] = {}
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                stem = strip_nifti(p.name)
                if stem is not None and p.is_file():
                    if stem in self:
                        self.twins[stem] = self[stem]
                    self[stem] = p

    def read(self, stem: str) -> Path | None:
        if stem in self.twins:
            raise DataError(
                f"{self.twins[stem]} and {self[stem].name} are two files for one image",
                hint="remove or rename one of them",
            )
        return self.get(stem)


def find_suffix_cases(
    root: Path, suffixes: Sequence[str], label_suffix: str, sep: str, label_map: dict[str, int], layout: str
) -> list[Case]:
    """Cases as folders `<id>/<id><sep><suffix>.nii.gz` (BraTS 2021/2023 style); `root` itself is the one case when
    it is such a folder (`medseg predict BraTS2021_00000/ out/` predicts that case).

    A folder is a case when at least one of its files carries a known suffix; missing channels are kept
    as paths that do not exist, so validation can name the missing file instead of dropping the case.
    """
    if not root.is_dir():
        return []
    own = _suffix_case(root.resolve(), suffixes, label_suffix, sep, label_map, layout)  # "." has no name
    if own is not None:
        return [own]
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return [c for f in folders if (c := _suffix_case(f, suffixes, label_suffix, sep, label_map, layout)) is not None]


def _ending_of(present: Sequence[Path]) -> str:
    """The file ending a case's missing channel is named with: its other files' (.nii in a .nii dataset)."""
    return ".nii" if present and all(p.name.endswith(".nii") for p in present) else ".nii.gz"


def _suffix_case(
    folder: Path, suffixes: Sequence[str], label_suffix: str, sep: str, label_map: dict[str, int], layout: str
) -> Case | None:
    files = _NiftiFiles(folder)
    cid = folder.name
    if not any(f"{cid}{sep}{s}" in files for s in suffixes):
        return None
    found = {s: files.read(f"{cid}{sep}{s}") for s in suffixes}
    ending = _ending_of([f for f in found.values() if f])
    images = tuple(str(found[s] or folder / f"{cid}{sep}{s}{ending}") for s in suffixes)
    label = files.read(f"{cid}{sep}{label_suffix}")
    return Case(cid, images, (None,) * len(suffixes), str(label) if label else None, label_map, layout)


_NNUNET = re.compile(r"^(?P<id>.+)_(?P<ch>\d{4})$")


def _nnunet_dir(root: Path) -> Path:
    """Where a dataset folder's channel files are: imagesTr, else imagesTs (a test set shipped alone), else root."""
    return next((root / d for d in ("imagesTr", "imagesTs") if (root / d).is_dir()), root)


def _labels_dir(root: Path, image_dir: Path) -> Path:
    """labelsTr, or labelsTs beside a test set's imagesTs."""
    return root / ("labelsTs" if image_dir.name == "imagesTs" else "labelsTr")


def has_nnunet_files(root: Path) -> bool:
    """Whether `root` (or its imagesTr / imagesTs) holds nnU-Net style `CASE_XXXX.nii.gz` channel files."""
    return any(_NNUNET.match(stem) for stem in _NiftiFiles(_nnunet_dir(root)))


def nnunet_files_beyond(root: Path, n_channels: int) -> list[Path]:
    """nnU-Net channel files in `root` (or its imagesTr / imagesTs) whose index is `n_channels` or more: `CASE_0001`
    when a dataset declares one channel. `find_nnunet_cases` reads indices below `n_channels` only."""
    files = _NiftiFiles(_nnunet_dir(root))
    return [p for stem, p in files.items() if (m := _NNUNET.match(stem)) and int(m["ch"]) >= n_channels]


def find_nnunet_cases(
    root: Path, n_channels: int, label_map: dict[str, int], layout: str, order: Sequence[int] | None = None
) -> list[Case]:
    """nnU-Net style `CASE_0000.nii.gz ...` in `root/imagesTr` (else imagesTs, else `root`), labels in
    `labelsTr/CASE.nii.gz` (`labelsTs` beside imagesTs).

    `order[i]` is the file index of the task's channel i (default: files already in the task's order).
    """
    image_dir = _nnunet_dir(root)
    groups: dict[str, dict[int, Path]] = {}
    files = _NiftiFiles(image_dir)
    for stem in files:
        m = _NNUNET.match(stem)
        if m:
            groups.setdefault(m["id"], {})[int(m["ch"])] = files.read(stem)
    labels = _NiftiFiles(_labels_dir(root, image_dir))
    order = list(order) if order is not None else list(range(n_channels))
    cases = []
    for cid, chans in sorted(groups.items()):
        ending = _ending_of(list(chans.values()))
        images = tuple(str(chans.get(i, image_dir / f"{cid}_{i:04d}{ending}")) for i in order)
        label = labels.read(cid)
        cases.append(Case(cid, images, (None,) * len(order), str(label) if label else None, label_map, layout))
    return cases


def find_4d_cases(root: Path, channel_index: Sequence[int], label_map: dict[str, int], layout: str) -> list[Case]:
    """One 4D file per case in `root/imagesTr` (else imagesTs, else `root`), volumes picked by `channel_index`
    (MSD style)."""
    image_dir = _nnunet_dir(root)
    labels, files = _NiftiFiles(_labels_dir(root, image_dir)), _NiftiFiles(image_dir)
    cases = []
    for cid in files:
        if cid.startswith("._") or _NNUNET.match(cid):  # macOS resource forks; nnU-Net channel files
            continue
        path, label = files.read(cid), labels.read(cid)
        n = len(channel_index)
        cases.append(
            Case(cid, (str(path),) * n, tuple(channel_index), str(label) if label else None, label_map, layout)
        )
    return cases


def detect_cases(root: str | Path, layouts: Sequence[Layout]) -> tuple[Layout, list[Case]]:
    """Try each layout in order; the first that finds cases wins."""
    root = Path(root)
    if root.is_file():
        raise DataError(
            "a file, not a data folder",
            path=str(root),
            hint="pass the folder that holds the cases (one folder per case, or imagesTr/ with its files)",
        )
    if not root.is_dir():
        raise DataError("data folder not found", path=str(root), hint="pass an existing folder")
    for layout in layouts:
        cases = layout.find_cases(root)
        if cases:
            return layout, cases
    names = ", ".join(lay.name for lay in layouts)
    hint = "a case needs its image files (labels alone are none); README 'Layouts recognised automatically'"
    if all(lay.name != "dicom" for lay in layouts) and has_dicom(root):
        hint = "DICOM is read by `medseg predict` only: convert the series to NIfTI (e.g. dcm2niix) to scan or train"
    other = _other_images(root)
    if other:
        found = ", ".join(f"{n} {suffix}" for suffix, n in other.items())
        raise DataError(
            f"no cases found in any known layout ({names}): the folder holds {found} files, which medseg does "
            "not read (it reads NIfTI .nii.gz/.nii, and DICOM series for prediction)",
            path=str(root),
            hint=CONVERT_HINT,
        )
    raise DataError(f"no cases found in any known layout ({names})", path=str(root), hint=hint)


def _other_images(root: Path) -> dict[str, int]:
    """Count of image files per unread format under `root` (two folder levels: imagesTr/, case folders)."""
    counts: dict[str, int] = {}
    for p in [*root.glob("*"), *root.glob("*/*")]:
        suffix = next((s for s in OTHER_IMAGE_SUFFIXES if p.name.lower().endswith(s)), None)
        if suffix and p.is_file():
            counts[suffix] = counts.get(suffix, 0) + 1
    return counts


def unused_files(root: str | Path, cases: Sequence[Case]) -> list[Path]:
    """Files under `root` that no case reads (notes, spreadsheets, other data): ignored, listed on request."""
    root = Path(root)
    refs = [p for c in cases for p in (*c.images, *([c.label] if c.label else []))]
    used = {Path(p).resolve() for p in refs if not is_series_ref(p)}
    series_dirs = {split_ref(p)[0].resolve() for p in refs if is_series_ref(p)}  # a DICOM case reads its folder
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name != "dataset.json"
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and _unread(p.resolve(), used, series_dirs)
    )


def dicom_folders_among(root: Path, unused: Sequence[Path]) -> list[Path]:
    """The subfolders of `root` holding DICOM files that no case reads: DICOM cases beside NIfTI ones (a folder is
    read in one layout), which were dropped with a count of ignored files."""
    tops = sorted({root / p.relative_to(root).parts[0] for p in unused if len(p.relative_to(root).parts) > 1})
    return [d for d in tops if has_dicom(d)]


def _unread(path: Path, used: set[Path], series_dirs: set[Path]) -> bool:
    return path not in used and series_dirs.isdisjoint(path.parents)
