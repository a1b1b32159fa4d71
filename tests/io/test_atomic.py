from __future__ import annotations

import os
import stat

import pytest

from medseg.io.atomic import FILE_MODE, atomic_path, atomic_write_text


def test_atomic_write_gets_the_umask_permissions_not_mkstemps_0600(tmp_path):
    out = tmp_path / "report.json"
    atomic_write_text(out, "{}")
    assert stat.S_IMODE(os.stat(out).st_mode) == FILE_MODE
    assert FILE_MODE & stat.S_IRGRP  # group-readable under the usual 022 / 002 umasks


def test_failed_block_leaves_neither_file_nor_temporary(tmp_path):
    out = tmp_path / "x.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_are_found_per_file_even_when_names_share_a_prefix(tmp_path):
    """A killed writer's temporary is found for its own file only (`case.1` and `case.10` share a prefix)."""
    import os as _os

    from medseg.io.atomic import temporary_siblings

    for final in ("case.1.nii.gz", "case.10.nii.gz"):
        with pytest.raises(RuntimeError), atomic_path(tmp_path / final) as tmp:
            kept = tmp.with_name(tmp.name + ".kept")
            _os.link(tmp, kept)  # what SIGKILL leaves: the temporary survives its writer
            raise RuntimeError
        kept.rename(tmp)
    assert [p.name.startswith(".case.1.nii.gz.") for p in temporary_siblings(tmp_path / "case.1.nii.gz")] == [True]
    assert len(temporary_siblings(tmp_path / "case.10.nii.gz")) == 1


def test_a_path_that_cannot_be_written_is_one_line_before_any_work(tmp_path):
    """A folder where a file goes, a path under a file: IsADirectoryError / FileExistsError tracebacks after the work
    (export, evaluate --out, scan --out, runs compare --plot, train --out)."""
    from medseg.errors import MedsegError
    from medseg.io.atomic import atomic_write_text, check_writable

    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    check_writable(tmp_path / "new" / "deeper" / "m.json")  # folders to be created: fine
    check_writable(tmp_path / "a_dir", folder=True)
    cases = [
        (tmp_path / "a_dir", False, "output path is a folder"),
        (tmp_path / "a_file" / "m.json", False, "output path lies under a file"),
        (tmp_path / "a_file", True, "output path is a file"),
        (tmp_path / "a_file" / "out", True, "output path lies under a file"),
    ]
    for path, folder, message in cases:
        with pytest.raises(MedsegError, match=message):
            check_writable(path, folder=folder)
    with pytest.raises(MedsegError, match="output path is a folder"):
        atomic_write_text(tmp_path / "a_dir", "text")  # the writers' own safety net
    assert [p.name for p in (tmp_path / "a_dir").iterdir()] == []


def test_evaluate_and_scan_check_their_output_before_reading_any_case(tmp_path, monkeypatch):
    from medseg.errors import MedsegError
    from medseg.workflows import evaluate as evaluate_workflow
    from medseg.workflows import scan as scan_workflow

    def never(*_, **__):
        raise AssertionError("the work started before the output path was checked")

    monkeypatch.setattr(evaluate_workflow, "evaluate_folder", never)
    monkeypatch.setattr(scan_workflow, "scan_dataset", never)
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(MedsegError, match="output path is a folder"):
        evaluate_workflow.evaluate(tmp_path, tmp_path, out=tmp_path / "a_dir")
    with pytest.raises(MedsegError, match="output path is a folder"):
        scan_workflow.scan(tmp_path, "brats", tmp_path / "a_dir")
