"""Folder prediction: load the model once, decode ahead and write behind in threads, never a partial file.

Any failure of one case (bad input, a network error, out of memory) is recorded with its reason and the batch goes
on; CUDA out-of-memory is first retried with one window at a time and CPU stitching (as MONAI's
`SlidingWindowInfererAdapt` does). The report is rewritten (atomically) after every case, so an interrupted run
leaves an accurate report and a re-run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Case, CaseVolumes
from medseg.errors import DataError, MedsegError
from medseg.inference.case_predict import CasePrediction, predict_case
from medseg.inference.engines import Engine, TorchEngine
from medseg.inference.output_folder import (
    CaseResult,
    claim_output_dir,
    output_is_complete,
    predictions_fingerprint,
    remove_stale_temporaries,
    write_report,
)
from medseg.io.atomic import atomic_path
from medseg.io.bundle import ModelBundle
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.nifti import read_case, save_nifti
from medseg.transforms.geometry import crop, to_ras
from medseg.transforms.labels import labels_to_regions
from medseg.viz.overlays import overlay_figure, save_png

PREFETCH = 2


@dataclass
class PredictOptions:
    """Per-run choices that are not properties of the model; how the model predicts is `infer` (by default the
    bundle's own settings, see `config.InferConfig.override`). `engine` runs the network (default: PyTorch, bf16
    autocast on CUDA unless `amp` is off). `shard` = (i, n): this process writes part i of n of a shared output
    folder. `overlay_channels`: the task's channels to draw (default: the first). `dicom_seg`: also write
    `<case>.dcm` (DICOM-SEG referencing the source series) for DICOM input."""

    infer: InferConfig | None = None
    engine: Engine | None = None
    save_probabilities: bool = False
    overwrite: bool = False
    allow_missing: bool = False
    overlays: bool = False
    amp: bool = True
    single_pass: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    shard: tuple[int, int] = (0, 1)
    overlay_channels: tuple[str, ...] = ()
    dicom_seg: bool = False


def _read(case: Case, allow_missing: bool) -> CaseVolumes | DataError:
    try:
        return read_case(case, with_label=False, allow_missing=allow_missing)
    except DataError as exc:
        return exc


def _write(pred: CasePrediction, pre, case: Case, bundle: ModelBundle, out_dir: Path, opts: PredictOptions) -> None:
    if opts.dicom_seg:  # before the NIfTI, whose presence marks the case done
        write_dicom_seg(pred.labels, case, case.label_map, bundle.model_name, out_dir / f"{case.id}.dcm")
    save_nifti(pred.labels, pred.affine, out_dir / f"{case.id}.nii.gz", np.uint8)
    if pred.probabilities is not None:
        # NIfTI-1 has no float16: store (R, X, Y, Z) float16 compressed, as nnU-Net does, with the grid.
        with atomic_path(out_dir / f"{case.id}_probabilities.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                probabilities=pred.probabilities.astype(np.float16),
                affine=pred.affine,
                regions=np.array(bundle.scheme.region_names),
            )
    if opts.overlays:
        ras, _ = to_ras(labels_to_regions(pred.labels, bundle.scheme, case.label_map), pred.affine)
        rgb = overlay_figure(
            np.asarray(pre.image),
            bundle.channels,
            opts.overlay_channels or bundle.channels[:1],
            bundle.scheme.region_names,
            crop(ras, pre.meta.box_start, pre.meta.box_end),
            None,
            title=case.id,
        )
        save_png(rgb, out_dir / "overlays" / f"{case.id}.png")


def _predict_with_retry(vols, case, engine: Engine, bundle, infer: InferConfig, opts: PredictOptions):
    """`predict_case`; on CUDA out-of-memory, once more with one window at a time stitched on the CPU."""
    kwargs = dict(
        device=opts.device,
        allow_missing=opts.allow_missing,
        keep_probabilities=opts.save_probabilities,
        single_pass=opts.single_pass,
    )
    try:
        return predict_case(vols, case, engine, bundle, infer, **kwargs), ""
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        lean = infer.override(sw_batch_size=1)
        pred = predict_case(vols, case, engine, bundle, lean, stitch_on_cpu=True, **kwargs)
        return pred, "out of GPU memory: retried with --sw-batch-size 1 and CPU stitching"


def _failure(exc: BaseException) -> str:
    if isinstance(exc, MedsegError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def predict_folder(
    cases: Sequence[Case],
    bundle: ModelBundle,
    out_dir: Path,
    opts: PredictOptions,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Predict every case into `out_dir/<case>.nii.gz`; returns per-case results (also in the report).

    Refuses a folder holding another model's predictions unless `opts.overwrite`; skips cases whose output is
    complete (resume).
    """
    infer = opts.infer or bundle.infer
    claim_output_dir(out_dir, predictions_fingerprint(bundle, infer), bundle.model_name, opts.overwrite)
    remove_stale_temporaries(cases, out_dir)
    engine = opts.engine or TorchEngine(bundle.build_model(), opts.device, bf16=opts.amp and opts.device.type == "cuda")
    if opts.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every window has the same shape: autotune once per folder
    results: list[CaseResult] = []
    todo = []
    for case in cases:
        out = out_dir / f"{case.id}.nii.gz"
        seg_done = not opts.dicom_seg or (out_dir / f"{case.id}.dcm").exists()
        if not opts.overwrite and out.exists() and output_is_complete(out) and seg_done:
            results.append(CaseResult(case.id, "skipped", output=str(out)))
            if on_case:
                on_case(results[-1])
        else:
            todo.append(case)
    with (
        ThreadPoolExecutor(PREFETCH, thread_name_prefix="decode") as readers,
        ThreadPoolExecutor(1, thread_name_prefix="write") as writers,
    ):
        pending: list[Future | None] = [readers.submit(_read, c, opts.allow_missing) for c in todo[:PREFETCH]]
        writes: list[tuple[Future, CaseResult]] = []
        for i, case in enumerate(todo):
            if i + PREFETCH < len(todo):
                pending.append(readers.submit(_read, todo[i + PREFETCH], opts.allow_missing))
            t0 = time.monotonic()
            vols = pending[i].result()
            pending[i] = None  # release the decoded volume as soon as it is used
            result = CaseResult(case.id, "ok", output=str(out_dir / f"{case.id}.nii.gz"))
            try:
                if isinstance(vols, DataError):
                    raise vols
                result.missing_modalities = [bundle.channels[j] for j in vols.missing]
                (pred, pre), retried = _predict_with_retry(vols, case, engine, bundle, infer, opts)
                result.warnings = [*([retried] if retried else []), *pred.warnings]
                result.status = "writing"
                writes.append((writers.submit(_write, pred, pre, case, bundle, out_dir, opts), result))
            except Exception as exc:  # any failure of one case: record it and go on with the batch
                result.status, result.error, result.output = "failed", _failure(exc), ""
            finally:
                vols = None
            result.seconds = round(time.monotonic() - t0, 3)
            results.append(result)
            _finish_writes(writes, results, out_dir, opts.shard, on_case, wait=False)
            if result.status == "failed" and on_case:
                on_case(result)
        _finish_writes(writes, results, out_dir, opts.shard, on_case, wait=True)
    write_report(out_dir, results, opts.shard, final=True)
    return results


def _finish_writes(writes, results, out_dir: Path, shard: tuple[int, int], on_case, wait: bool) -> None:
    """Report cases whose output is on disk; a failed write marks the case failed."""
    for fut, result in list(writes):
        if not wait and not fut.done():
            continue
        try:
            fut.result()
            result.status = "ok"
        except Exception as exc:
            result.status, result.error = "failed", f"cannot write output ({_failure(exc)})"
        writes.remove((fut, result))
        if on_case:
            on_case(result)
    write_report(out_dir, results, shard, final=False)
