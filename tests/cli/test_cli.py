"""The CLI as a user meets it: one-line errors with exit 1, usage errors exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def medseg(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medseg", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout
    )


def test_version_and_help():
    out = medseg("--version")
    assert out.returncode == 0 and out.stdout.startswith("medseg ")
    assert "train" in medseg("--help").stdout


def test_config_show_resolves_overrides():
    out = medseg("config", "show", "--config", "configs/brats_smoke.yaml", "--set", "train.epochs=7")
    assert out.returncode == 0 and "epochs: 7" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("config", "show", "--set", "train.epocs=3"), "invalid config key 'train.epocs'"),
        (("data", "scan", "does/not/exist"), "data folder not found"),
        (("predict", "--model", "nope.pt", ".", "/tmp/out"), "model not found"),
    ],
)
def test_user_errors_are_one_line_exit_1(args, message, tmp_path):
    out = medseg(*args, cwd=tmp_path if args[0] != "config" else ROOT)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_usage_error_exits_2():
    out = medseg("data", "synth")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_scan_reports_bad_case_and_exits_1_unless_skip_bad(tmp_path):
    from pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2023", (24, 24, 16), seed=1)
    (tmp_path / "d" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").unlink()
    out = medseg("data", "scan", str(tmp_path / "d"), "--out", str(tmp_path / "m.json"), cwd=tmp_path)
    assert out.returncode == 1
    assert "missing file BraTS-GLI-00001-000-t2f" in out.stdout + out.stderr
    ok = medseg("data", "scan", str(tmp_path / "d"), "--out", str(tmp_path / "m.json"), "--skip-bad", cwd=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "m.json").exists()


def test_predict_batch_with_a_broken_case_finishes_the_others_and_exits_1(tmp_path):
    from medseg.io.bundle import save_checkpoint
    from pipelines.brats import write_synthetic_dataset
    from tests.conftest import make_bundle

    write_synthetic_dataset(tmp_path / "in", 3, "brats2021", (24, 24, 16), seed=1)
    broken = tmp_path / "in" / "BraTS2021_00001" / "BraTS2021_00001_t1ce.nii.gz"
    broken.write_bytes(broken.read_bytes()[:100])
    save_checkpoint({"bundle": make_bundle().to_dict()}, tmp_path / "model.pt")
    out = medseg("predict", "--model", "model.pt", "in", "out", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "BraTS2021_00001_t1ce.nii.gz" in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [
        "BraTS2021_00000.nii.gz",
        "BraTS2021_00002.nii.gz",
    ]


def test_unrelated_files_are_ignored_and_listed_with_verbose(tmp_path, bundle_file):
    from pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2021", (24, 24, 16), seed=1)
    (tmp_path / "d" / "notes.txt").write_text("unrelated")
    extra = tmp_path / "d" / "BraTS2021_00000" / "BraTS2021_00000_t1_old.nii.gz"
    extra.write_bytes((extra.parent / "BraTS2021_00000_t1.nii.gz").read_bytes())
    quiet = medseg("data", "scan", "d", "--out", "m.json", cwd=tmp_path)
    assert quiet.returncode == 0 and "2 file(s) not part of any case ignored" in quiet.stdout
    for args in (("data", "scan", "d", "--out", "m.json"), ("predict", "--model", str(bundle_file), "d", "out")):
        out = medseg(*args, "--verbose", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "ignored notes.txt" in out.stdout and "ignored BraTS2021_00000/BraTS2021_00000_t1_old" in out.stdout


def test_prediction_sharding_from_part_or_torchrun(monkeypatch):
    import typer

    from medseg.cli.predict import _shard

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _shard(None) == (0, 1)
    assert _shard("2/4") == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _shard(None) == (1, 2)
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(typer.BadParameter):
            _shard(bad)
