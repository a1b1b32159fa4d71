"""DICOM-SEG output with highdicom: one binary segment per label class, referencing the source series' instances.

Classes rather than BraTS's nested regions: segments of a label map do not overlap, so a viewer shows exactly the
painted NIfTI output. Known classes carry SNOMED CT codes (necrosis, edema, neoplasm); other classes are coded as
an anatomical structure / organ with the class name as the segment label.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.core import Case
from medseg.errors import DataError
from medseg.io.atomic import atomic_path
from medseg.io.dicom import case_series


def _codes(name: str):
    from pydicom.sr.codedict import codes

    known = {
        "necrotic": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Necrosis),
        "edema": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Edema),
        "enhancing": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    }
    return known.get(name, (codes.SCT.AnatomicalStructure, codes.SCT.Organ))


def write_dicom_seg(labels: np.ndarray, case: Case, label_map: dict[str, int], model_name: str, path: Path) -> None:
    """Write `labels` (X, Y, Z, native label values on the first present channel's DICOM grid) as a DICOM-SEG beside the
    NIfTI output's name, atomically."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    # the first channel read (a missing modality has no series): the grid `labels` are on
    series = next(s for s in case_series(case.images, case.id, allow_missing=True) if s is not None)
    sources = [pydicom.dcmread(f) for f in series.files]  # the order GDCM sorted: slice k of `labels`
    classes = sorted(label_map.items(), key=lambda kv: kv[1])
    frames = np.ascontiguousarray(labels.transpose(2, 1, 0))  # (slices, rows, columns) as the source frames
    masks = np.stack([frames == value for _, value in classes], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medseg {model_name}", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=_codes(name)[0],
            segmented_property_type=_codes(name)[1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, (name, _) in enumerate(classes)
    ]
    try:
        with warnings.catch_warnings():  # the source's PatientName judged as a name: copied as it is, not news
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
            seg = _segmentation(hd, sources, masks, segments, model_name)
    except (ValueError, AttributeError) as exc:  # a source series highdicom cannot reference
        raise DataError(f"cannot write DICOM-SEG ({str(exc).splitlines()[0][:160]})", case=case.id) from None
    with atomic_path(path) as tmp:
        seg.save_as(tmp)


def _segmentation(hd, sources, masks, segments, model_name: str):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=model_name,
        software_versions=__version__,
        device_serial_number="none",
        series_description=f"medseg {model_name} segmentation",
        omit_empty_frames=False,  # a regular stack: readers (highdicom get_volume, viewers) rebuild the volume
    )
