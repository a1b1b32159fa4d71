from __future__ import annotations

import json

import pytest

from medseg.data.manifest import assign_folds, load_manifest, save_manifest
from medseg.data.validate import relativise, scan_dataset
from medseg.errors import DataError
from medseg.pipelines import get_task


def test_folds_are_deterministic_disjoint_and_balanced():
    ids = [f"case{i:03d}" for i in range(23)]
    a = assign_folds(ids, 5, seed=0)
    assert a == assign_folds(list(reversed(ids)), 5, seed=0)
    assert a != assign_folds(ids, 5, seed=1)
    sizes = [sum(v == k for v in a.values()) for k in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]


def test_split_holds_out_one_fold(brats2021_dir, tmp_path):
    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    train, val = manifest.split(0)
    assert {c.id for c in train}.isdisjoint({c.id for c in val})
    assert len(train) + len(val) == len(manifest.cases)
    with pytest.raises(DataError, match="fold 7"):
        manifest.split(7)


def test_round_trip_with_relative_paths(brats2021_dir, tmp_path):
    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    path = tmp_path / "sub" / "m.json"
    path.parent.mkdir()
    save_manifest(relativise(manifest, path.parent), path)
    raw = json.loads(path.read_text())
    assert not raw["cases"][0]["images"][0].startswith("/")
    loaded = load_manifest(path)
    assert [c.case.images for c in loaded.cases] == [c.case.images for c in manifest.cases]
    assert loaded.digest() == load_manifest(path).digest()


@pytest.mark.parametrize("bad_id", ["../escape", "/abs/path", "a/b", ".."])
def test_case_ids_that_escape_the_output_folder_are_refused(brats2021_dir, tmp_path, bad_id):
    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    path = tmp_path / "m.json"
    save_manifest(manifest, path)
    raw = json.loads(path.read_text())
    raw["cases"][0]["id"] = bad_id
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="not a plain name"):
        load_manifest(path)
