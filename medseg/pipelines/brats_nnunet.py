"""BraTS in nnU-Net's layout (`CASE_0000.nii.gz` ...): channel order and label codes come from its dataset.json.

nnU-Net's own BraTS datasets do not use the BraTS release codes (Dataset137_BraTS2021 has 1 edema, 2 non-enhancing /
necrotic, 3 enhancing, written as nested regions), and MSD-derived ones put FLAIR at `_0000`. So nothing is guessed:
without a dataset.json (in the folder or its parent, where nnU-Net keeps it beside imagesTr/imagesTs) the folder is
refused with the fix, and names that cannot be read as BraTS channels or classes are named in the error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from medseg.core import Case
from medseg.data.layouts import find_nnunet_cases, has_nnunet_files
from medseg.errors import DataError

CHANNEL_ALIASES = {
    "t1": {"t1", "t1w", "t1n", "nativet1", "t1native", "t1pre"},
    "t1ce": {"t1ce", "t1c", "t1gd", "t1contrast", "t1post", "t1wce", "t1cegd"},
    "t2": {"t2", "t2w"},
    "flair": {"flair", "t2f", "t2flair"},
}
EXAMPLE = (
    '{"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}, '
    '"labels": {"background": 0, "necrotic": 1, "edema": 2, "enhancing": 4}}'
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _class_of(name: str) -> str | None:
    n = _norm(name)
    if "nonenhanc" in n or "necro" in n or n in {"ncr", "net", "ncrnet"}:
        return "necrotic"
    if "edema" in n or "oedema" in n or n in {"ed", "snfh"}:
        return "edema"
    if "enhanc" in n or n == "et":
        return "enhancing"
    return None


def _region_of(name: str) -> str | None:
    n = _norm(name)
    if "whole" in n or n == "wt":
        return "WT"
    if "core" in n or n == "tc":
        return "TC"
    if ("enhanc" in n and "nonenhanc" not in n) or n == "et":
        return "ET"
    return None


def find_description(root: Path) -> Path | None:
    """dataset.json in the folder or its parent (nnU-Net keeps it beside imagesTr and imagesTs)."""
    for folder in (root, root.parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def channel_order(channel_names: dict[str, str], channels: Sequence[str], path: Path) -> list[int]:
    """File index of each canonical channel, from dataset.json's `channel_names`."""
    index_of = {}
    for idx, name in channel_names.items():
        for channel, aliases in CHANNEL_ALIASES.items():
            if _norm(name) in aliases:
                index_of[channel] = int(idx)
    missing = [c for c in channels if c not in index_of]
    if missing:
        raise DataError(
            f"dataset.json channel_names {dict(channel_names)} do not name the BraTS channel(s) {missing}",
            path=str(path),
            hint="a BraTS model reads T1, T1ce, T2 and FLAIR: name those channels so, or for other images (CT, one "
            "MR channel) use a model trained on them (`--task generic`)",
        )
    return [index_of[c] for c in channels]


def label_codes(labels: dict[str, object], path: Path) -> dict[str, int]:
    """Class -> code from dataset.json `labels`: plain codes by class name, or nnU-Net's nested regions
    (whole tumour / tumour core / enhancing as code lists), from which each class's code is the difference."""
    plain = {_class_of(k): int(v) for k, v in labels.items() if isinstance(v, int) and int(v) != 0 and _class_of(k)}
    if len(plain) == 3:
        return plain
    regions = {}
    for k, v in labels.items():
        codes = {int(c) for c in (v if isinstance(v, list) else [v])} - {0}
        if _region_of(k) and codes:
            regions[_region_of(k)] = codes
    if set(regions) == {"WT", "TC", "ET"}:
        necrotic, edema = regions["TC"] - regions["ET"], regions["WT"] - regions["TC"]
        if len(regions["ET"]) == len(necrotic) == len(edema) == 1:
            return {"necrotic": necrotic.pop(), "edema": edema.pop(), "enhancing": next(iter(regions["ET"]))}
    raise DataError(
        f"dataset.json labels {labels} cannot be read as the BraTS classes necrotic, edema and enhancing",
        path=str(path),
        hint=f"name each label code, e.g. {EXAMPLE}",
    )


def find_brats_nnunet_cases(root: Path, channels: Sequence[str]) -> list[Case]:
    """nnU-Net-style BraTS cases with channels reordered to `channels` and the dataset's own label codes."""
    if not has_nnunet_files(root):
        return []
    path = find_description(root)
    if path is None:
        raise DataError(
            "nnU-Net-style files (CASE_0000.nii.gz ...) without a dataset.json: which file is which MRI channel, "
            "and which code is which tumour class, differs between datasets",
            path=str(root),
            hint=f"add a dataset.json beside the images, e.g. {EXAMPLE}",
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"dataset.json is not valid JSON ({exc})", path=str(path), hint="fix the JSON there") from None
    wrong = [k for k in ("channel_names", "labels") if not isinstance(meta, dict) or not isinstance(meta.get(k), dict)]
    if wrong:
        raise DataError(f'dataset.json has no "{wrong[0]}" mapping', path=str(path), hint=f"e.g. {EXAMPLE}")
    names, labels = meta["channel_names"], meta["labels"]
    order = channel_order(names, channels, path)
    return find_nnunet_cases(root, len(names), label_codes(labels, path), "nnunet", order)
