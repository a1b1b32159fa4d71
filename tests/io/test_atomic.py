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
