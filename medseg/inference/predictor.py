"""Folder prediction: load the model once, decode ahead and write behind in threads, never a partial file.

A bad case is recorded with its reason and skipped; the report is rewritten (atomically) after every case,
so an interrupted run leaves an accurate report and a re-run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Case
from medseg.errors import DataError, MedsegError
from medseg.inference.case_predict import CasePrediction, predict_case
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import CaseVolumes, read_case, save_nifti
from medseg.transforms.geometry import crop, to_ras
from medseg.transforms.labels import labels_to_regions
from medseg.viz.overlays import overlay_figure, save_png

REPORT = "predict_report.json"
MARKER = ".medseg_predict.json"
PREFETCH = 2


@dataclass
class PredictOptions:
    """Per-run choices that are not properties of the model; how the model predicts is `infer` (by default the
    bundle's own settings, see `config.InferConfig.override`)."""

    infer: InferConfig | None = None
    save_probabilities: bool = False
    overwrite: bool = False
    allow_missing: bool = False
    overlays: bool = False
    amp: bool = True
    single_pass: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class CaseResult:
    id: str
    status: str  # ok | skipped | failed (| writing, while its output is being written)
    seconds: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    missing_modalities: list[str] = field(default_factory=list)
    output: str = ""


def model_fingerprint(bundle: ModelBundle) -> str:
    h = hashlib.sha256(bundle.model_name.encode())
    for k in sorted(bundle.state_dict):
        h.update(k.encode())
        h.update(bundle.state_dict[k].detach().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def check_output_dir(out_dir: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse a non-empty output folder written by another model (or not by medseg) unless --overwrite."""
    marker = out_dir / MARKER
    if overwrite or not out_dir.exists():
        return
    if marker.exists():
        if json.loads(marker.read_text()).get("model") != fingerprint:
            raise MedsegError(
                "output folder holds predictions of another model",
                path=str(out_dir),
                hint="pass --overwrite or another folder",
            )
        return
    if any(p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith(".") for p in out_dir.iterdir()):
        raise MedsegError("output folder is not empty", path=str(out_dir), hint="pass --overwrite or another folder")


def output_is_complete(path: Path) -> bool:
    """An existing output counts as done only if it reads back completely."""
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
        return True
    except Exception:
        return False


def _read(case: Case, allow_missing: bool) -> CaseVolumes | DataError:
    try:
        return read_case(case, with_label=False, allow_missing=allow_missing)
    except DataError as exc:
        return exc


def _write(pred: CasePrediction, pre, case: Case, bundle: ModelBundle, out_dir: Path, opts: PredictOptions) -> None:
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
        shown = [c for c in ("flair", "t1ce") if c in bundle.channels] or bundle.channels[:1]
        rgb = overlay_figure(
            np.asarray(pre.image),
            bundle.channels,
            shown,
            bundle.scheme.region_names,
            crop(ras, pre.meta.box_start, pre.meta.box_end),
            None,
            title=case.id,
        )
        save_png(rgb, out_dir / "overlays" / f"{case.id}.png")


def predict_folder(
    cases: Sequence[Case],
    bundle: ModelBundle,
    out_dir: Path,
    opts: PredictOptions,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Predict every case into `out_dir/<case>.nii.gz`; returns per-case results (also in the report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.part*"):  # temp files of a run killed mid-write (SIGKILL)
        stale.unlink(missing_ok=True)
    fingerprint = model_fingerprint(bundle)
    atomic_write_text(out_dir / MARKER, json.dumps({"model": fingerprint, "model_name": bundle.model_name}))
    model = bundle.build_model().to(opts.device)
    infer = opts.infer or bundle.infer
    if opts.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every window has the same shape: autotune once per folder
    results: list[CaseResult] = []
    todo = []
    for case in cases:
        out = out_dir / f"{case.id}.nii.gz"
        if not opts.overwrite and out.exists() and output_is_complete(out):
            results.append(CaseResult(case.id, "skipped", output=str(out)))
            if on_case:
                on_case(results[-1])
        else:
            todo.append(case)
    with (
        ThreadPoolExecutor(PREFETCH, thread_name_prefix="decode") as readers,
        ThreadPoolExecutor(1, thread_name_prefix="write") as writers,
    ):
        pending: list[Future] = [readers.submit(_read, c, opts.allow_missing) for c in todo[:PREFETCH]]
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
                pred, pre = predict_case(
                    vols,
                    case,
                    model,
                    bundle,
                    infer,
                    device=opts.device,
                    allow_missing=opts.allow_missing,
                    keep_probabilities=opts.save_probabilities,
                    amp=opts.amp,
                    single_pass=opts.single_pass,
                )
                result.warnings, result.status = pred.warnings, "writing"
                writes.append((writers.submit(_write, pred, pre, case, bundle, out_dir, opts), result))
            except DataError as exc:
                result.status, result.error, result.output = "failed", str(exc), ""
            result.seconds = round(time.monotonic() - t0, 3)
            results.append(result)
            _finish_writes(writes, results, out_dir, on_case, wait=False)
            if result.status == "failed" and on_case:
                on_case(result)
        _finish_writes(writes, results, out_dir, on_case, wait=True)
    write_report(out_dir, results)
    return results


def _finish_writes(writes, results, out_dir: Path, on_case, wait: bool) -> None:
    """Report cases whose output is on disk; a failed write marks the case failed."""
    for fut, result in list(writes):
        if not wait and not fut.done():
            continue
        try:
            fut.result()
            result.status = "ok"
        except (OSError, ValueError) as exc:
            result.status, result.error = "failed", f"cannot write output ({exc.__class__.__name__}: {exc})"
        writes.remove((fut, result))
        if on_case:
            on_case(result)
    write_report(out_dir, results)


def peak_memory_gb() -> dict[str, float]:
    """Peak resident memory of this process so far (and peak GPU memory on CUDA), in GiB: what a case of this
    size needs, for sizing machines (docs/RELIABILITY.md)."""
    out = {"rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # ru_maxrss is KiB
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def write_report(out_dir: Path, results: Sequence[CaseResult]) -> None:
    summary = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    report = {"summary": summary, "peak_memory_gb": peak_memory_gb(), "cases": [asdict(r) for r in results]}
    atomic_write_text(out_dir / REPORT, json.dumps(report, indent=1))
