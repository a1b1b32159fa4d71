"""The CLI as a user meets it: one-line errors with exit 1, usage errors exit 2, never a traceback."""

from __future__ import annotations

import os
import re
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


@pytest.mark.parametrize("command", [("predict",), ("data", "synth")])
def test_help_in_a_pipe_shows_every_option_whole(command):
    """Rich's option tables cut long names at 80-110 columns ("--allow-missin…"); a pipe gets click's plain help."""
    import click
    import typer

    from medseg.cli import app as cli

    cli._register()
    group = typer.main.get_command(cli.app)
    params = group.get_command(click.Context(group), command[0])
    if len(command) > 1:
        params = params.get_command(click.Context(params), command[1])
    names = [name for p in params.params for name in p.opts if name.startswith("--")]
    out = subprocess.run(
        [sys.executable, "-m", "medseg", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 0 and "…" not in out.stdout
    missing = [name for name in names if not re.search(rf"(^|[\s,]){re.escape(name)}([\s,/]|$)", out.stdout, re.M)]
    assert names and not missing, missing


def test_config_show_resolves_overrides():
    out = medseg("config", "show", "--config", "brats_smoke", "--set", "train.epochs=7")
    assert out.returncode == 0 and "epochs: 7" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("config", "show", "--set", "train.epocs=3"), "unknown config key 'train.epocs'"),
        (("data", "scan", "does/not/exist"), "data folder not found"),
        (("predict", "--model", "nope.pt", ".", "/tmp/out"), "model not found"),
        # brackets are rich markup: "[red]" vanished from the message and "[/b]" was a MarkupError traceback
        (("data", "scan", "scans[/b]/[red]x"), "scans[/b]/[red]x: data folder not found"),
    ],
)
def test_user_errors_are_one_line_exit_1(args, message, tmp_path):
    out = medseg(*args, cwd=tmp_path if args[0] != "config" else ROOT)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("data", "synth"), "Missing argument"),
        (("predict", "--model", "m.pt", "in", "out", "--overlays", "--steps-on-device"), "--steps-on-device"),
    ],
)
def test_usage_error_exits_2(args, names, tmp_path):
    out = medseg(*args, cwd=tmp_path)
    assert out.returncode == 2 and names in out.stderr and "Traceback" not in out.stderr


def test_scan_reports_bad_case_and_exits_1_unless_skip_bad(tmp_path):
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2023", (24, 24, 16), seed=1)
    (tmp_path / "d" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").unlink()
    out = medseg("data", "scan", str(tmp_path / "d"), "--out", str(tmp_path / "m.json"), cwd=tmp_path)
    assert out.returncode == 1
    assert "bad: case BraTS-GLI-00001-000, " in out.stdout and "missing file BraTS-GLI-00001-000-t2f" in out.stdout
    ok = medseg("data", "scan", str(tmp_path / "d"), "--out", str(tmp_path / "m.json"), "--skip-bad", cwd=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "m.json").exists()


def test_scan_with_every_case_bad_lists_each_and_says_why(tmp_path):
    """The bad cases are printed as found (the final error used to point to a list it never printed)."""
    import typer
    from typer.testing import CliRunner

    from medseg.cli.data import scan
    from medseg.errors import DataError
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2021", (24, 24, 16), seed=1)
    for t1 in (tmp_path / "d").rglob("*_t1.nii.gz"):
        t1.unlink()
    app = typer.Typer()
    app.command()(scan)
    result = CliRunner().invoke(app, [str(tmp_path / "d"), "--out", str(tmp_path / "m.json")])
    assert [line.split(",")[0] for line in result.stdout.splitlines() if line.startswith("bad:")] == [
        "bad: case BraTS2021_00000",
        "bad: case BraTS2021_00001",
    ]
    assert isinstance(result.exception, DataError) and not (tmp_path / "m.json").exists()
    assert str(result.exception).startswith("case BraTS2021_00000, ")
    assert "no valid cases (missing file BraTS2021_00000_t1.nii.gz; 1 other bad case(s)" in str(result.exception)


def test_scan_json_and_csv_list_every_case_for_scripts(tmp_path):
    import csv
    import io
    import json

    import typer
    from typer.testing import CliRunner

    from medseg.cli.data import scan
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 3, "brats2021", (24, 24, 16), seed=1)
    (tmp_path / "d" / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").write_bytes(b"")
    (tmp_path / "d" / "notes.txt").write_text("unrelated")
    app = typer.Typer()
    app.command()(scan)
    args = [str(tmp_path / "d"), "--out", str(tmp_path / "m.json"), "--folds", "2"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 1  # a bad case, no --skip-bad
    report = json.loads(result.stdout)
    assert [(c["id"], c["status"]) for c in report["cases"]] == [
        ("BraTS2021_00000", "ok"),
        ("BraTS2021_00002", "ok"),
        ("BraTS2021_00001", "bad"),
    ]
    assert report["cases"][0]["shape"] == [24, 24, 16] and report["cases"][0]["fold"] in (0, 1)
    assert report["cases"][2]["fold"] is None and report["cases"][2]["spacing"] is None  # was "" beside integers
    assert report["cases"][0]["labelled"] is True and report["cases"][2]["labelled"] is True  # same columns
    assert "empty file" in report["cases"][2]["error"] and "empty file" in result.stderr
    assert report["manifest"] == str(tmp_path / "m.json") and report["ignored_files"] == [
        str(tmp_path / "d" / "notes.txt")
    ]
    result = CliRunner().invoke(app, [*args, "--format", "csv", "--skip-bad"])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["status"] for r in rows] == ["ok", "ok", "bad"] and rows[0]["shape"] == "24x24x16"
    assert rows[2]["fold"] == rows[2]["shape"] == "" and rows[0]["error"] == ""
    for case in ("BraTS2021_00000", "BraTS2021_00002"):  # no good case left: stdout was empty for scripts
        (tmp_path / "d" / case / f"{case}_flair.nii.gz").write_bytes(b"")
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 1 and "no valid cases" in str(result.exception)
    report = json.loads(result.stdout)
    assert report["manifest"] is None and [c["status"] for c in report["cases"]] == ["bad"] * 3
    assert all("empty file" in c["error"] for c in report["cases"])


def test_predict_batch_with_a_broken_case_finishes_the_others_and_exits_1(tmp_path):
    from medseg.io.bundle import save_checkpoint
    from medseg.pipelines.brats import write_synthetic_dataset
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
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2021", (24, 24, 16), seed=1)
    (tmp_path / "d" / "notes.txt").write_text("unrelated")
    extra = tmp_path / "d" / "BraTS2021_00000" / "BraTS2021_00000_t1_old.nii.gz"
    extra.write_bytes((extra.parent / "BraTS2021_00000_t1.nii.gz").read_bytes())
    (tmp_path / "d" / "study7").mkdir()  # a DICOM case among NIfTI ones: dropped with a count
    (tmp_path / "d" / "study7" / "IM_0001").write_bytes(b"\0" * 128 + b"DICM")
    quiet = medseg("data", "scan", "d", "--out", "m.json", cwd=tmp_path)
    assert quiet.returncode == 0 and "2 more file(s) not part of any case ignored" in quiet.stdout
    assert "ignored DICOM study7/: this folder is read as NIfTI cases" in quiet.stdout
    # an image no case reads is named without --verbose (a misnamed modality, or a channel the model does not read)
    assert "ignored image BraTS2021_00000/BraTS2021_00000_t1_old.nii.gz: no case reads it" in quiet.stdout
    for args in (("data", "scan", "d", "--out", "m.json"), ("predict", "--model", str(bundle_file), "d", "out")):
        out = medseg(*args, "--verbose", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "ignored notes.txt" in out.stdout and "ignored BraTS2021_00000/BraTS2021_00000_t1_old" in out.stdout


def test_predict_log_keeps_each_line_whole_when_redirected(tmp_path, bundle_file):
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 1, "brats2021", (24, 24, 16), seed=1)
    out_dir = tmp_path / "a_folder_name_long_enough_to_pass_eighty_columns" / "predictions"
    out = medseg("predict", "--model", str(bundle_file), "d", str(out_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"outputs and predict_report.json in {out_dir}" in lines
    header = r"1 case\(s\), model \S+ \(t1, t1ce, t2, flair\) from .+, on cpu with [\w-]+"
    assert any(re.fullmatch(header, line) for line in lines), out.stdout


def test_a_masked_missing_modality_is_named_on_its_cases_line(tmp_path, bundle_file):
    """With --allow-missing-modality a case without FLAIR (or a DICOM study whose FLAIR series has a description
    medseg does not recognise) is predicted from three channels: its line says so, not only the JSON report."""
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", 2, "brats2021", (24, 24, 16), seed=1)
    (tmp_path / "d" / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").unlink()
    out = medseg(
        "predict",
        "--model",
        str(bundle_file),
        "d",
        "out",
        "--allow-missing-modality",
        "--engine",
        "torch",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.startswith("ok ")}
    assert "warning: no flair: masked" in lines["BraTS2021_00001"]
    assert "masked" not in lines["BraTS2021_00000"]


def test_part_option_is_parsed_and_checked():
    import typer

    from medseg.cli.predict import _part

    assert _part(None) is None and _part("2/4") == (2, 4)
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(typer.BadParameter):
            _part(bad)


def test_shards_come_from_part_or_torchrun(monkeypatch, brats2021_dir):
    from medseg.workflows.predict import FolderPredictor
    from tests.conftest import make_bundle

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    predictor = FolderPredictor(make_bundle(), device="cpu")
    ids = [c.id for c in FolderPredictor(make_bundle(), device="cpu").plan(brats2021_dir, (0, 1)).cases]
    assert [c.id for c in predictor.plan(brats2021_dir).cases] == ids[1::2]
    assert [c.id for c in predictor.plan(brats2021_dir, (0, 2)).cases] == ids[0::2]


def test_predict_refuses_a_folder_of_another_models_predictions(tmp_path):
    from medseg.io.bundle import save_checkpoint
    from medseg.pipelines.brats import write_synthetic_dataset
    from tests.conftest import make_bundle

    write_synthetic_dataset(tmp_path / "in", 1, "brats2021", (24, 24, 16), seed=1)
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, tmp_path / "a.pt")
    save_checkpoint({"bundle": make_bundle(bias=-1.0).to_dict()}, tmp_path / "b.pt")
    assert medseg("predict", "--model", "a.pt", "in", "out", cwd=tmp_path).returncode == 0
    refused = medseg("predict", "--model", "b.pt", "in", "out", cwd=tmp_path)
    assert refused.returncode == 1 and "another model" in refused.stderr and "--overwrite" in refused.stderr
    assert "engine auto" not in refused.stdout  # refused before `auto` spent its time measuring engines
    assert medseg("predict", "--model", "b.pt", "in", "out", "--overwrite", cwd=tmp_path).returncode == 0


def test_two_shards_predict_into_one_folder_at_once(tmp_path):
    """Each shard keeps to its own cases' temporary files and report; the last one merges the reports."""
    import json

    from medseg.io.bundle import save_checkpoint
    from medseg.pipelines.brats import write_synthetic_dataset
    from tests.conftest import make_bundle

    write_synthetic_dataset(tmp_path / "in", 6, "brats2021", (32, 32, 24), seed=1, kind="simple")
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, tmp_path / "m.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predict_report.part2of3.json").write_text("{}")  # an earlier run split in three
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "medseg", "predict", "--model", "m.pt", "in", "out", "--part", f"{i}/2"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    said = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert f"prediction summary (shard {i} of 2)" in " ".join(out.split())  # unlabelled: read as two runs
        said.append(" ".join(out.split()))
    assert any("merged into predict_report.json now" in text for text in said)  # the last said "when ... finished"
    assert len(list((tmp_path / "out").glob("BraTS2021_*.nii.gz"))) == 6
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["summary"] == {"ok": 6, "skipped": 0, "failed": 0, "interrupted": 0} and report["shards"] == 2
    assert report["engine"] and report["model"]  # what made the masks, kept by the merge
    assert sorted(c["id"] for c in report["cases"]) == [f"BraTS2021_{i:05d}" for i in range(6)]
    assert not list((tmp_path / "out").glob(".*.part*"))
    parts = sorted(p.name for p in (tmp_path / "out").glob("predict_report.part*"))
    assert parts == ["predict_report.part0of2.json", "predict_report.part1of2.json"]  # the stale part2of3 went
    from medseg.inference.output_folder import write_report

    write_report(tmp_path / "out", [], (0, 1), True, {})  # an unsharded run's final report: no shard's is current
    assert not list((tmp_path / "out").glob("predict_report.part*"))


def test_config_show_never_prints_credentials():
    out = medseg("config", "show", "--set", "tracking.uri=http://bob:s3cret@mlflow.example:5000?token=t0k")
    assert out.returncode == 0 and "bob:***@mlflow.example" in out.stdout
    assert "s3cret" not in out.stdout and "t0k" not in out.stdout


def test_the_review_commands_printed_after_training_find_the_store(tmp_path, monkeypatch):
    """`medseg runs show ID` pasted as printed failed ("no MLflow store") after training with --tracking-uri."""
    from medseg.cli.train import review_commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = f"sqlite:///{tmp_path / 'stores' / 'ml.db'}"
    assert review_commands("abc", elsewhere) == (
        f"medseg runs show abc --tracking-uri {elsewhere}   |   medseg ui --tracking-uri {elsewhere}"
    )
    assert review_commands("abc", f"sqlite:///{tmp_path / 'mlflow.db'}") == "medseg runs show abc   |   medseg ui"
    spaced = f"sqlite:///{tmp_path / 'my stores' / 'ml.db'}"  # pasted into a shell: quoted
    assert review_commands("abc", spaced).startswith(f"medseg runs show abc --tracking-uri '{spaced}'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)  # the bare commands read the same store
    assert review_commands("abc", elsewhere) == "medseg runs show abc   |   medseg ui"


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(28, "No space left on device", "/data/out/predict_report.json"), "free space on that disk"),
        (PermissionError(13, "Permission denied", "/data/out"), "check the permissions"),
    ],
)
def test_a_full_disk_or_forbidden_path_is_one_line_not_a_traceback(error, said, monkeypatch, capsys):
    """A disk that filled during `predict` ended in pages of chained OSError tracebacks from the report writer."""
    from tests.conftest import cli_main_with

    def fails(**_):
        try:
            raise OSError(28, "No space left on device")  # the first failure, while writing a case
        except OSError:
            raise error from None

    code, err = cli_main_with(fails, monkeypatch, capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{error.filename}: {error.strerror}" in err and said in err


def test_a_library_error_raised_over_a_full_disk_names_the_disk():
    """MLflow and others re-raise a full disk as their own error: the OSError behind it is found down the chain."""
    from medseg.errors import environment_failure

    try:
        try:
            raise OSError(28, "No space left on device", "/runs/mlflow.db")
        except OSError as exc:
            raise RuntimeError("database or disk is full") from exc
    except RuntimeError as wrapped:
        found = environment_failure(wrapped)
    assert (
        str(found)
        == "/runs/mlflow.db: No space left on device (fix: free space on that disk, or write the outputs elsewhere)"
    )
    assert environment_failure(RuntimeError("a bug")) is None
