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
