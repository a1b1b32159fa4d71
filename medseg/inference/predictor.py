"""Folder prediction: load the model once, read ahead and write behind in worker processes, never a partial file.

Reader processes decode and preprocess the next cases while the network runs; writer processes post-process,
restore the grid and write (`inference.workers`). Outputs and the report keep the input order whatever finishes
first. Any failure of one case (bad input, a network error, out of memory) is recorded with its reason and the batch
goes on; CUDA out-of-memory is first retried with one window at a time and CPU stitching (as MONAI's
`SlidingWindowInfererAdapt` does). The report is rewritten (atomically) after every case, so an interrupted run
leaves an accurate report and a re-run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Case
from medseg.errors import MedsegError, first_line
from medseg.inference.case_predict import (
    CasePrediction,
    LabelSpec,
    NetworkOutput,
    PreparedCase,
    finish_case,
    predict_case,
    predict_small_cases,
    window_count,
)
from medseg.inference.engines import Engine, TorchEngine
from medseg.inference.output_folder import (
    CaseResult,
    PredictionsSource,
    claim_output_dir,
    output_is_complete,
    refuse_writing_over_inputs,
    remove_stale_temporaries,
    side_outputs,
    write_report,
)
from medseg.inference.workers import prepared_cases, resolve_workers, writer_count, writer_pool
from medseg.io.atomic import atomic_path
from medseg.io.bundle import ModelBundle
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.nifti import placement_header, save_nifti
from medseg.transforms.geometry import crop, to_ras
from medseg.transforms.labels import labels_to_regions
from medseg.transforms.resample import resample_channels
from medseg.viz.overlays import overlay_figure, save_png

WRITES_PER_WRITER = 2  # finished cases waiting for each writer before the network waits (bounds memory)


@dataclass
class PredictOptions:
    """Per-run choices that are not properties of the model; how the model predicts is `infer` (by default the
    bundle's own settings, see `config.InferConfig.override`). `engine` runs the network (default: PyTorch, bf16
    autocast on CUDA unless `amp` is off). `shard` = (i, n): this process writes part i of n of a shared output
    folder. `overlay_channels`: the task's channels to draw (default: the first). `dicom_seg`: also write
    `<case>.dcm` (DICOM-SEG referencing the source series) for DICOM input. `workers`: reader processes (writers:
    a third as many, at least one); None: `inference.workers.default_workers` (none on the CPU), 0: none; none
    either where /dev/shm is too small (`inference.workers.resolve_workers`). `steps_on_device`: preprocess and
    restore each case in torch on `device` (`transforms.on_device`), so worker processes only decode and encode;
    None: on a GPU. Overlays draw the preprocessed image, so a run that draws them preprocesses on the host.
    `share_windows`: cases with fewer windows than the window batch share forward passes (`inference.window_batch`);
    None: on a GPU (on the CPU a batch of 4 windows costs 25 % more than 4 single ones: benchmarks/RESULTS.md)."""

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
    workers: int | None = None
    steps_on_device: bool | None = None
    share_windows: bool | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What a writer process needs to turn a network output into files (not the model's weights)."""

    labels: LabelSpec
    out_dir: Path
    model_name: str
    channels: tuple[str, ...]
    region_names: tuple[str, ...]
    overlay_channels: tuple[str, ...]
    overlays: bool
    dicom_seg: bool


def _write(out: NetworkOutput, image: np.ndarray | None, case: Case, spec: OutputSpec) -> list[str]:
    """Finish one case and write its files (the NIfTI last: its presence marks the case done); its warnings."""
    pred = finish_case(out, case, spec.labels)
    out_dir = spec.out_dir
    if spec.dicom_seg:
        write_dicom_seg(pred.labels, case, case.label_map, spec.model_name, out_dir / f"{case.id}.dcm")
    if pred.probabilities is not None:
        # NIfTI-1 has no float16: store (R, X, Y, Z) float16 compressed, as nnU-Net does, with the grid.
        with atomic_path(out_dir / f"{case.id}_probabilities.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                probabilities=pred.probabilities.astype(np.float16),
                affine=pred.affine,
                regions=np.array(spec.region_names),
            )
    warnings = list(pred.warnings)
    if spec.overlays:
        try:
            _draw_overlay(pred, out, image, case, spec)
        except Exception as exc:  # a picture must never cost the mask; a re-run draws it (it counts as missing)
            warnings.append(f"overlay not drawn ({first_line(exc)})")
    save_nifti(pred.labels, pred.affine, out_dir / f"{case.id}.nii.gz", np.uint8, like=placement_header(case))
    return warnings


def _draw_overlay(pred: CasePrediction, out: NetworkOutput, image: np.ndarray, case: Case, spec: OutputSpec) -> None:
    """The case's overlay PNG: the network's input image with the predicted regions, on the input's cropped grid."""
    ras, _ = to_ras(labels_to_regions(pred.labels, spec.labels.scheme, case.label_map), pred.affine)
    if out.meta.resampled:  # the network's image is on the model's spacing, the labels on the input's
        image = resample_channels(image, out.meta.crop_shape)
    rgb = overlay_figure(
        image,
        list(spec.channels),
        spec.overlay_channels or spec.channels[:1],
        spec.region_names,
        crop(ras, out.meta.box_start, out.meta.box_end),
        None,
        title=case.id,
    )
    save_png(rgb, spec.out_dir / "overlays" / f"{case.id}.png")


def _predict_with_retry(prepared: PreparedCase, case, engine: Engine, bundle, infer: InferConfig, opts: PredictOptions):
    """`predict_case`; on CUDA out-of-memory, once more with one window at a time stitched on the CPU."""
    kwargs = dict(
        device=opts.device,
        allow_missing=opts.allow_missing,
        keep_probabilities=opts.save_probabilities,
        single_pass=opts.single_pass,
    )
    try:
        return predict_case(prepared, case, engine, bundle, infer, **kwargs), ""
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        lean = infer.override(sw_batch_size=1)
        out = predict_case(prepared, case, engine, bundle, lean, stitch_on_cpu=True, **kwargs)
        return out, "out of GPU memory: retried with --sw-batch-size 1 and CPU stitching"


def _groups(
    todo: Sequence[Case], reader, bundle: ModelBundle, infer: InferConfig, device: torch.device, batching: bool
) -> Iterator[list[tuple[Case, PreparedCase | Exception]]]:
    """The cases in order, in groups for the network: one case, or consecutive cases with fewer windows each than
    the window batch, gathered until their windows fill it (`batching`)."""
    small: list[tuple[Case, PreparedCase | Exception]] = []
    windows = 0
    for case in todo:
        prepared = next(reader)
        count = _windows(prepared, bundle, infer, device) if batching else None
        if isinstance(count, Exception):
            prepared, count = count, None
        if count is not None and count < infer.sw_batch_size:
            small.append((case, prepared))
            windows += count
            if windows >= infer.sw_batch_size:
                yield small
                small, windows = [], 0
            continue
        if small:
            yield small
            small, windows = [], 0
        yield [(case, prepared)]
    if small:
        yield small


def _windows(
    prepared: PreparedCase | Exception, bundle, infer: InferConfig, device: torch.device
) -> int | Exception | None:
    """The case's sliding-window count (preprocessing it first if the device does that); its failure, returned;
    None for a case that failed to read."""
    if isinstance(prepared, Exception):
        return None
    try:
        return window_count(prepared, bundle, infer, device)
    except Exception as exc:  # e.g. out of GPU memory while preprocessing: this case's failure
        return exc


def _predict_group(group, engine: Engine, bundle, infer: InferConfig, opts: PredictOptions) -> list[tuple]:
    """(network output or its failure, retry note) for each case of `group`: small cases' windows share forward
    passes; a group that fails is redone case by case, so each failure is recorded against its own case (and the
    others say they were predicted alone)."""
    alone = ""
    if len(group) > 1:
        try:
            items = [(prepared, case) for case, prepared in group]
            outs = predict_small_cases(
                items,
                engine,
                bundle,
                infer,
                device=opts.device,
                allow_missing=opts.allow_missing,
                keep_probabilities=opts.save_probabilities,
            )
            return [(out, "") for out in outs]
        except Exception as exc:  # redone one case at a time below, where each failure is reported
            torch.cuda.empty_cache()
            alone = f"the shared window pass of {len(group)} cases failed ({_failure(exc)}): predicted alone"
    done = []
    for case, prepared in group:
        try:
            if isinstance(prepared, Exception):
                done.append((prepared, ""))
                continue
            out, retried = _predict_with_retry(prepared, case, engine, bundle, infer, opts)
            done.append((out, "; ".join(n for n in (alone, retried) if n)))
        except Exception as exc:
            done.append((exc, ""))
    return done


def _failure(exc: BaseException) -> str:
    if isinstance(exc, MedsegError):
        return str(exc)
    return first_line(exc, 200)


def predict_folder(
    cases: Sequence[Case],
    bundle: ModelBundle,
    out_dir: Path,
    opts: PredictOptions,
    on_case: Callable[[CaseResult], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Predict every case into `out_dir/<case>.nii.gz`; returns per-case results (also in the report).

    Refuses a folder holding another model's predictions unless `opts.overwrite`; skips cases whose output is
    complete (resume). At most READ_AHEAD cases per reader and WRITES_PER_WRITER per writer are in memory.
    `on_message`: why the run uses no worker processes when it cannot (a small /dev/shm).
    """
    infer = opts.infer or bundle.infer
    refuse_writing_over_inputs(cases, out_dir)
    claim_output_dir(out_dir, PredictionsSource.of(bundle, infer), opts.overwrite)
    remove_stale_temporaries(cases, out_dir)
    engine = opts.engine or TorchEngine(bundle.build_model(), opts.device, bf16=opts.amp and opts.device.type == "cuda")
    if opts.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # windows share one shape, batches a few sizes: tuned once each
    results: list[CaseResult] = []
    todo = []
    for case in cases:
        out = out_dir / f"{case.id}.nii.gz"
        # a side output asked for now (--save-probabilities on a re-run) must exist too, or the case is redone;
        # with --overwrite, one not asked for is another run's and goes (probabilities of another model)
        sides = side_outputs(case, out_dir)
        asked = [path for name, path in sides.items() if getattr(opts, name)]
        if not opts.overwrite and out.exists() and output_is_complete(out) and all(p.exists() for p in asked):
            results.append(CaseResult(case.id, "skipped", output=str(out)))
            if on_case:
                on_case(results[-1])
            continue
        if opts.overwrite:
            for path in set(sides.values()) - set(asked):
                path.unlink(missing_ok=True)
        todo.append(case)
    workers, problem = resolve_workers(opts.workers, len(todo), opts.device)
    if problem and on_message:
        on_message(problem)
    spec = OutputSpec(
        LabelSpec.of(bundle, infer),
        out_dir,
        bundle.model_name,
        tuple(bundle.channels),
        tuple(bundle.scheme.region_names),
        tuple(opts.overlay_channels),
        opts.overlays,
        opts.dicom_seg,
    )
    on_device = (opts.device.type == "cuda" if opts.steps_on_device is None else opts.steps_on_device) and not (
        opts.overlays
    )
    reader = prepared_cases(todo, bundle.preprocess, opts.allow_missing, workers, opts.device.type == "cuda", on_device)
    writes: list[tuple[Future, CaseResult]] = []
    keep = WRITES_PER_WRITER * max(1, writer_count(workers))
    share = opts.device.type == "cuda" if opts.share_windows is None else opts.share_windows
    batching = share and not infer.tta and not opts.single_pass and infer.sw_batch_size > 1
    about = {"model": bundle.model_name, "engine": engine.name, "device": str(opts.device)}

    def report(final: bool) -> None:
        write_report(out_dir, results, opts.shard, final, about)

    completed = False
    try:
        with writer_pool(workers) as writers:
            t0 = time.monotonic()
            for group in _groups(todo, reader, bundle, infer, opts.device, batching):
                outputs = _predict_group(group, engine, bundle, infer, opts)
                seconds = round((time.monotonic() - t0) / len(group), 3)
                for (case, prepared), (out, retried) in zip(group, outputs, strict=True):
                    result = CaseResult(case.id, "ok", output=str(out_dir / f"{case.id}.nii.gz"), seconds=seconds)
                    try:
                        if isinstance(prepared, Exception):
                            raise prepared
                        result.missing_modalities = [bundle.channels[j] for j in prepared.missing]
                        if isinstance(out, Exception):
                            raise out
                        out.warnings[:0] = [retried] if retried else []
                        image = np.asarray(prepared.pre.image) if opts.overlays else None
                        result.status = "writing"
                        writes.append((writers.submit(_write, out, image, case, spec), result))
                    except Exception as exc:  # any failure of one case: record it and go on with the batch
                        result.status, result.error, result.output = "failed", _failure(exc), ""
                    results.append(result)
                    if result.status == "failed" and on_case:
                        on_case(result)
                del group, outputs  # release the inputs as soon as they are used (the loop's names too)
                prepared = out = image = None
                _finish_writes(writes, on_case, keep, report)
                t0 = time.monotonic()
            _finish_writes(writes, on_case, 0, report)
        completed = True
    finally:
        del reader  # stops the reader processes now, also when interrupted
        for fut, result in writes:  # interrupted: the pool has finished the writes under way, cancelled the rest
            _settle(fut, result)
        if not completed:  # cases in the network or not yet read: listed, so the report names every case left
            seen = {r.id for r in results}
            results += [CaseResult(case.id, "interrupted") for case in todo if case.id not in seen]
        report(completed)  # the truth on disk, also after an interruption
    return results


def _finish_writes(writes, on_case, keep: int, report: Callable[[bool], None]) -> None:
    """Report cases whose output is on disk, waiting for the oldest until at most `keep` writes are pending, then
    rewrite the (not final) report."""
    for fut, result in list(writes):
        if len(writes) <= keep and not fut.done():
            continue
        _settle(fut, result)
        writes.remove((fut, result))
        if on_case:
            on_case(result)
    report(False)


def _settle(fut: Future, result: CaseResult) -> None:
    """A case's status from its write: ok (with the writer's warnings), failed, or interrupted when cancelled."""
    if fut.cancelled():
        result.status, result.output = "interrupted", ""
        return
    try:
        result.warnings = fut.result()
        result.status = "ok"
    except Exception as exc:
        result.status, result.error = "failed", f"cannot write output ({_failure(exc)})"
