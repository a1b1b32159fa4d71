"""Dataset manifests: the scanned, validated cases of a dataset with deterministic folds (JSON on disk)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from medseg.core import Case
from medseg.errors import DataError
from medseg.io.atomic import atomic_write_text


@dataclass
class ManifestCase:
    case: Case
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    fold: int
    label_values: tuple[int, ...] | None = None  # the nonzero values its label file holds (None: not recorded)


@dataclass
class Manifest:
    """Task name, layout, channels and cases with folds; `root` is where relative paths resolve.

    `intensity_stats`: for CT channels, the foreground intensity statistics of all cases (mean, std, p00_5,
    p99_5 in HU), computed at scan time for the `ct` normalisation.
    """

    task: str
    layout: str
    channels: list[str]
    label_map: dict[str, int]
    cases: list[ManifestCase] = field(default_factory=list)
    intensity_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def split(self, fold: int | None) -> tuple[list[Case], list[Case]]:
        """(train, val) cases: fold K validates on fold K and trains on the rest; None uses all for both."""
        if fold is None:
            all_cases = [c.case for c in self.cases]
            return all_cases, all_cases[: max(1, len(all_cases) // 5)]
        folds = {c.fold for c in self.cases}
        if fold not in folds:
            raise DataError(f"fold {fold} not in manifest folds {sorted(folds)}", hint="pick an existing fold")
        train = [c.case for c in self.cases if c.fold != fold]
        val = [c.case for c in self.cases if c.fold == fold]
        return train, val

    def absent_regions(self, regions: dict[str, tuple[str, ...]], ids: set[str] | None = None) -> list[str]:
        """The regions (name -> classes) that no label file of the labelled cases `ids` (default: all) holds; []
        when the manifest predates recorded label values (or no case is labelled)."""
        recorded = [c.label_values for c in self.cases if c.case.label and (ids is None or c.case.id in ids)]
        if not recorded or any(v is None for v in recorded):
            return []
        present = set().union(*recorded)
        return [r for r, classes in regions.items() if not any(self.label_map.get(c) in present for c in classes)]

    def to_json(self) -> dict[str, Any]:
        out = {
            "task": self.task,
            "layout": self.layout,
            "channels": self.channels,
            "label_map": self.label_map,
            "cases": [
                {**c.case.to_json(), "shape": list(c.shape), "spacing": list(c.spacing), "fold": c.fold}
                | ({"label_values": list(c.label_values)} if c.label_values is not None else {})
                for c in self.cases
            ],
        }
        return out | ({"intensity_stats": self.intensity_stats} if self.intensity_stats else {})

    def split_digest(self) -> str:
        """Hash of the case ids and their folds: what a run's train/validation split is, whatever the paths (a
        dataset moved with its manifest, another mount point) or the statistics."""
        pairs = sorted((c.case.id, c.fold) for c in self.cases)
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]

    def digest(self) -> str:
        """Content hash (logged so a run names exactly the data it saw). The label values are derived from the
        label files it already names: left out, so a manifest scanned before they were recorded hashes the same."""
        data = self.to_json()
        data["cases"] = [{k: v for k, v in c.items() if k != "label_values"} for c in data["cases"]]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def assign_folds(case_ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Deterministic fold per case: sorted ids shuffled with `seed`, dealt round-robin (disjoint, balanced)."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[j]: int(i % folds) for i, j in enumerate(order)}


def check_case_id(cid: str, source: str) -> str:
    p = PurePosixPath(cid)
    if not cid or p.is_absolute() or "/" in cid or "\\" in cid or cid in {".", ".."} or ".." in p.parts:
        raise DataError(
            f"case id {cid!r} is not a plain name (would escape the output folder)",
            path=source,
            hint="case ids must not contain path separators or '..'",
        )
    return cid


def save_manifest(manifest: Manifest, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(manifest.to_json(), indent=1))


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest; relative file paths resolve against the manifest's folder."""
    p = Path(path)
    if not p.is_file():
        raise DataError("manifest not found", path=str(p), hint="run `medseg data scan DATA_DIR --out FILE`")
    try:
        raw = json.loads(p.read_text())
        cases = []
        for c in raw["cases"]:
            check_case_id(c["id"], str(p))
            c = dict(c)
            c["images"] = [str((p.parent / f).resolve()) for f in c["images"]]
            if c.get("label"):
                c["label"] = str((p.parent / c["label"]).resolve())
            values = tuple(int(v) for v in c["label_values"]) if "label_values" in c else None
            case = Case.from_json(c)
            cases.append(ManifestCase(case, tuple(c["shape"]), tuple(c["spacing"]), int(c["fold"]), values))
        stats = {str(ch): {k: float(v) for k, v in s.items()} for ch, s in raw.get("intensity_stats", {}).items()}
        return Manifest(raw["task"], raw["layout"], list(raw["channels"]), dict(raw["label_map"]), cases, stats)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"malformed manifest ({exc.__class__.__name__}: {exc})", path=str(p)) from None
