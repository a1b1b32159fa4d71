"""The prediction output folder: whose predictions it holds, what a killed run left, and the per-shard reports.

Several shards (`--part i/n`, torchrun ranks) may write one folder at once: each touches only its own cases'
temporary files and writes its own report; the last shard to finish merges them into `predict_report.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.config import InferConfig, flatten
from medseg.core import Case
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text, check_writable, temporary_siblings
from medseg.io.bundle import ModelBundle
from medseg.io.dicom import is_series_ref
from medseg.memory import peak_rss_bytes

REPORT = "predict_report.json"
MARKER = ".medseg_predict.json"


@dataclass
class CaseResult:
    id: str
    status: str  # ok | skipped | failed (| writing, while its output is being written; interrupted before it)
    seconds: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    missing_modalities: list[str] = field(default_factory=list)
    output: str = ""


def _weights_hash(bundle: ModelBundle):
    h = hashlib.sha256(bundle.model_name.encode())
    h.update(bundle.weights_digest.encode())
    for k in sorted(bundle.state_dict):
        h.update(k.encode())
        h.update(bundle.state_dict[k].detach().cpu().numpy().tobytes()[:4096])
    return h


def weights_fingerprint(bundle: ModelBundle) -> str:
    """Identifies the network alone (name and weights): what an exported graph or an engine choice depends on."""
    return _weights_hash(bundle).hexdigest()[:16]


# The refusal where a folder's marker does not say what differs (written before settings were recorded).
OTHER_PREDICTIONS = "output folder holds predictions of another model or other settings"


@dataclass(frozen=True)
class PredictionsSource:
    """What produced a folder's labels: the weights and every setting that changes them, hashed (`fingerprint`)
    and spelled out (`settings`, flat), so a refusal can say what differs."""

    fingerprint: str
    model_name: str
    settings: dict

    @classmethod
    def of(cls, bundle: ModelBundle, infer: InferConfig) -> PredictionsSource:
        h = _weights_hash(bundle)
        weights = h.copy().hexdigest()[:16]  # `weights_fingerprint`, without hashing the weights again
        settings = infer.model_dump(mode="json", exclude={"sw_batch_size"})  # batching changes no label
        preprocess = bundle.preprocess.to_json()
        h.update(json.dumps(settings, sort_keys=True).encode())
        h.update(json.dumps(preprocess, sort_keys=True).encode())
        flat = {"weights": weights, **flatten(settings), **flatten(preprocess, "preprocess.")}
        return cls(h.hexdigest()[:16], bundle.model_name, flat)

    def refusal(self, marker: dict) -> str:
        """Why a folder whose marker says `marker` holds other predictions, naming what differs where the marker
        spells its settings out (folders written before they were recorded get the general wording)."""
        before = marker.get("settings")
        if not isinstance(before, dict):
            return OTHER_PREDICTIONS
        if before.get("weights") != self.settings["weights"]:
            name = marker.get("model_name")
            which = f"{name}, not {self.model_name}" if name != self.model_name else f"other {name} weights"
            return f"output folder holds predictions of another model ({which})"
        now = self.settings
        keys = [k for k in sorted({*before, *now}) if before.get(k) != now.get(k)]
        changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys]
        if not changed:  # a setting recorded in no marker field (written by another medseg version)
            return OTHER_PREDICTIONS
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"output folder holds predictions made with other settings: {', '.join(changed[:3])}{more}"


def claim_output_dir(out_dir: Path, source: PredictionsSource, overwrite: bool) -> None:
    """`check_output_dir`, then mark the folder as ours. Shards of one run write the same marker."""
    check_output_dir(out_dir, source, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = {"model": source.fingerprint, "model_name": source.model_name, "settings": source.settings}
    atomic_write_text(out_dir / MARKER, json.dumps(marker))


def check_output_dir(out_dir: Path, source: PredictionsSource, overwrite: bool) -> None:
    """Refuse a folder holding another model's (or settings') predictions, or foreign NIfTI files, unless
    `overwrite`. Writes nothing, so it can run before the model's engine is opened (or timed)."""
    check_writable(out_dir, folder=True)
    marker = out_dir / MARKER
    if out_dir.exists() and not overwrite:
        if marker.exists():
            theirs = json.loads(marker.read_text())
            if theirs.get("model") != source.fingerprint:
                raise MedsegError(
                    source.refusal(theirs),
                    path=str(out_dir),
                    hint="pass --overwrite or another folder",
                )
        elif any(p.name.endswith((".nii.gz", ".nii")) and not p.name.startswith(".") for p in out_dir.iterdir()):
            raise MedsegError(
                "output folder is not empty", path=str(out_dir), hint="pass --overwrite or another folder"
            )


def outputs_of(case: Case, out_dir: Path) -> list[Path]:
    """Every file a prediction of `case` may write: the label map, then the side outputs (`side_outputs`)."""
    return [out_dir / f"{case.id}.nii.gz", *side_outputs(case, out_dir).values()]


def side_outputs(case: Case, out_dir: Path) -> dict[str, Path]:
    """The optional outputs of a case by the option that asks for them."""
    return {
        "dicom_seg": out_dir / f"{case.id}.dcm",
        "save_probabilities": out_dir / f"{case.id}_probabilities.npz",
        "overlays": out_dir / "overlays" / f"{case.id}.png",
    }


def refuse_writing_over_inputs(cases: Sequence[Case], out_dir: Path) -> None:
    """An output folder that is an input folder (MSD's imagesTr: `<case>.nii.gz` is the 4D input) would have its
    images or labels replaced by label maps (`--overwrite` was the suggested fix): refused before any write."""
    inputs = {Path(p).resolve(): c.id for c in cases for p in (*c.images, c.label) if p and not is_series_ref(p)}
    for case in cases:
        for out in outputs_of(case, out_dir):
            if out.resolve() in inputs:
                raise MedsegError(
                    f"the output {out.name} would replace an input file of case {inputs[out.resolve()]}",
                    path=str(out_dir),
                    hint="write the predictions to another folder",
                )


def remove_stale_temporaries(cases: Sequence[Case], out_dir: Path) -> None:
    """Temporary files a killed run left for these cases (never another shard's cases)."""
    for case in cases:
        for final in outputs_of(case, out_dir):
            for tmp in temporary_siblings(final):
                tmp.unlink(missing_ok=True)


def output_is_complete(path: Path) -> bool:
    """An existing output counts as done only if it reads back completely."""
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
        return True
    except Exception:
        return False


def peak_memory_gb() -> dict[str, float]:
    """Peak resident memory of this process so far (and peak GPU memory on CUDA), in GiB: what a case of this
    size needs, for sizing machines (docs/RELIABILITY.md)."""
    out = {"rss": round(peak_rss_bytes() / 2**30, 3)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def report_name(shard: tuple[int, int]) -> str:
    i, n = shard
    return REPORT if n == 1 else f"predict_report.part{i}of{n}.json"


STATUSES = ("ok", "skipped", "failed", "interrupted")


def write_report(
    out_dir: Path, results: Sequence[CaseResult], shard: tuple[int, int], final: bool, about: dict[str, str]
) -> None:
    """This shard's report (rewritten after every case); the merged report once every shard is final. `about`:
    what predicted (model, engine, device), so a report says how its masks were made."""
    summary = {s: sum(r.status == s for r in results) for s in STATUSES}
    report = {
        **about,
        "summary": summary,
        "peak_memory_gb": peak_memory_gb(),
        "shard": list(shard),
        "final": final,
        "cases": [asdict(r) for r in results],
    }
    atomic_write_text(out_dir / report_name(shard), json.dumps(report, indent=1))
    if final and (shard[1] == 1 or merge_reports(out_dir, shard[1])):
        _remove_other_shard_reports(out_dir, shard[1])


def _remove_other_shard_reports(out_dir: Path, parts: int) -> None:
    """Once `predict_report.json` is this run's, shard reports of a run split in another number of parts are stale
    (a folder predicted in 2 parts, then redone in 3, kept both sets beside the merged report)."""
    for path in out_dir.glob("predict_report.part*of*.json"):
        if parts == 1 or not path.name.endswith(f"of{parts}.json"):
            path.unlink(missing_ok=True)


def merge_reports(out_dir: Path, parts: int) -> bool:
    """Write `predict_report.json` from every shard's final report; False while some shard is unfinished."""
    reports = []
    for i in range(parts):
        path = out_dir / report_name((i, parts))
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not report.get("final"):
            return False
        reports.append(report)
    cases = sorted((c for r in reports for c in r["cases"]), key=lambda c: c["id"])
    summary = {s: sum(r["summary"].get(s, 0) for r in reports) for s in STATUSES}
    peak = {k: max(r["peak_memory_gb"].get(k, 0.0) for r in reports) for k in reports[0]["peak_memory_gb"]}
    about = {k: reports[0][k] for k in ("model", "engine", "device") if k in reports[0]}
    merged = {**about, "summary": summary, "peak_memory_gb": peak, "shards": parts, "final": True, "cases": cases}
    atomic_write_text(out_dir / REPORT, json.dumps(merged, indent=1))
    return True
