from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from medseg.evaluation.lesionwise import LesionScores, lesion_dice, lesion_wise
from medseg.evaluation.metrics import dice, hd95, image_diagonal_mm, region_metrics, volume_ml
from medseg.pipelines.brats import EMPTY_HD95_MM


def cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_known_dice_and_volume():
    a = cube((10, 10, 10), (0, 0, 0), (4, 4, 4))  # 64 voxels
    b = cube((10, 10, 10), (2, 0, 0), (6, 4, 4))  # 64 voxels, 32 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert volume_ml(a, (2.0, 1.0, 1.0)) == pytest.approx(0.128)


def test_brats_empty_conventions():
    empty = np.zeros((5, 5, 5), bool)
    full = cube((5, 5, 5), (1, 1, 1), (3, 3, 3))
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert dice(full, empty) == 0.0 and hd95(full, empty, (1, 1, 1), EMPTY_HD95_MM) == EMPTY_HD95_MM
    assert dice(empty, full) == 0.0 and hd95(empty, full, (1, 1, 1), EMPTY_HD95_MM) == EMPTY_HD95_MM
    assert pytest.approx(image_diagonal_mm((240, 240, 155), (1, 1, 1)), abs=0.01) == EMPTY_HD95_MM


def test_other_tasks_score_one_empty_mask_with_their_own_image_diagonal():
    """BraTS's 373.13 mm is its 240x240x155 diagonal; a CT task with another grid gets its own."""
    empty = np.zeros((10, 20, 30), bool)
    full = cube((10, 20, 30), (1, 1, 1), (3, 3, 3))
    assert hd95(full, empty, (2.0, 1.0, 0.5)) == pytest.approx(np.sqrt(20**2 + 20**2 + 15**2))


def test_hd95_is_in_millimetres():
    a = cube((20, 20, 20), (5, 5, 5), (10, 10, 10))
    b = cube((20, 20, 20), (8, 5, 5), (13, 10, 10))  # shifted 3 voxels along x
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(3.0)
    assert hd95(a, b, (2.5, 1, 1)) == pytest.approx(7.5)


def test_agrees_with_monai_where_conventions_coincide():
    rng = np.random.default_rng(0)
    pred = rng.random((2, 16, 16, 16)) > 0.6
    gt = rng.random((2, 16, 16, 16)) > 0.5
    ours = region_metrics(pred, gt, ["A", "B"], spacing=(1.0, 1.5, 2.0))
    p, g = torch.from_numpy(pred)[None].float(), torch.from_numpy(gt)[None].float()
    monai_dice = DiceMetric(include_background=True, reduction="none")(p, g)[0]
    monai_hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        p, g, spacing=[1.0, 1.5, 2.0]
    )[0]
    assert ours["dice_a"] == pytest.approx(float(monai_dice[0]), abs=1e-6)
    assert ours["dice_b"] == pytest.approx(float(monai_dice[1]), abs=1e-6)
    assert ours["hd95_a"] == pytest.approx(float(monai_hd[0]), abs=1e-4)
    # MONAI gives NaN for an empty ground truth; we give the BraTS value.
    empty = torch.zeros_like(g[:, :1])
    assert torch.isnan(DiceMetric(include_background=True, reduction="none")(empty, empty)).all()
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_lesion_wise_counts_misses_and_false_positives():
    gt = cube((40, 40, 40), (2, 2, 2), (8, 8, 8)) | cube((40, 40, 40), (20, 20, 20), (26, 26, 26))
    pred = cube((40, 40, 40), (2, 2, 2), (8, 8, 8)) | cube((40, 40, 40), (30, 30, 30), (35, 35, 35))
    lw = lesion_wise(pred, gt, (1, 1, 1))
    # lesion 1 perfect (1.0), lesion 2 missed (0), one false positive (0): mean over 3.
    assert lw.dice == pytest.approx(1 / 3)
    assert lw.hd95 == pytest.approx((0 + 374 + 374) / 3)
    assert (lw.detected, lw.missed, lw.false_positives) == (1, 1, 1)
    assert lesion_wise(np.zeros_like(gt), np.zeros_like(gt), (1, 1, 1)) == LesionScores(1.0, 0.0, 0, 0, 0)


def test_lesion_wise_ignores_small_gt_lesions():
    gt = cube((20, 20, 20), (2, 2, 2), (5, 5, 5))  # 27 voxels <= 50
    assert lesion_wise(np.zeros_like(gt), gt, (1, 1, 1)) == LesionScores(1.0, 0.0, 0, 0, 0)


# The matching rules of the BraTS 2023 evaluation code (rachitsaluja/BraTS-2023-Metrics); the whole metric is
# compared with that code on real-model predictions by benchmarks/compare_lesionwise.py.
def test_lesion_wise_merges_gt_pieces_whose_dilations_touch():
    near = cube((40, 40, 40), (5, 5, 5), (11, 11, 11)) | cube((40, 40, 40), (5, 5, 15), (11, 11, 21))  # 3 apart
    pred = cube((40, 40, 40), (5, 5, 5), (11, 11, 11))
    # One lesion of 432 voxels half found: Dice 2*216/(216+432); as two lesions it would be (1 + 0) / 2.
    assert lesion_wise(pred, near, (1, 1, 1)).dice == pytest.approx(2 * 216 / 648)


def test_lesion_wise_prediction_of_an_unscored_small_lesion_is_no_false_positive():
    big, small = cube((40, 40, 40), (2, 2, 2), (8, 8, 8)), cube((40, 40, 40), (25, 25, 25), (28, 28, 28))
    assert lesion_wise(big | small, big | small, (1, 1, 1)) == LesionScores(1.0, 0.0, 1, 0, 0)


def test_lesion_wise_dilation_is_18_connected():
    gt = cube((40, 40, 40), (10, 10, 10), (14, 14, 14))
    corner = np.zeros_like(gt)
    corner[16, 16, 16] = True  # 3 voxels off the cube's corner on every axis: reached only by a 26-connected step
    assert lesion_wise(gt | corner, gt, (1, 1, 1)).dice == pytest.approx(0.5)


def test_lesion_wise_size_threshold_is_a_volume():
    gt = cube((20, 20, 20), (2, 2, 2), (5, 5, 5))  # 27 voxels of 8 mm3 = 216 mm3 > 50 mm3: scored, and missed
    assert lesion_wise(np.zeros_like(gt), gt, (2, 2, 2)) == LesionScores(0.0, 374.0, 0, 1, 0)
    assert lesion_dice(np.zeros_like(gt), gt, (2, 2, 2)) == 0.0


def test_evaluate_folder_ignores_temporary_files(tmp_path, brats2021_dir):
    import shutil

    from medseg.data.layouts import detect_cases
    from medseg.evaluation.evaluate import evaluate_folder
    from medseg.pipelines import get_task

    task = get_task("brats")
    _, cases = detect_cases(brats2021_dir, task.layouts)
    shutil.copy(cases[0].label, tmp_path / f"{cases[0].id}.nii.gz")  # a perfect prediction
    (tmp_path / f".{cases[0].id}.x1.part.nii.gz").write_bytes(b"")  # left by a killed writer
    result = evaluate_folder(tmp_path, cases, task)
    assert [r["id"] for r in result.rows] == [cases[0].id] and not result.unmatched_pred and not result.failed
    assert result.rows[0]["dice_wt"] == 1.0


def test_evaluate_cli_tables_csv_and_json(tmp_path, brats2021_dir):
    """Ground truth evaluated against itself (one false voxel added): every output format, lesion counts."""
    import csv
    import io
    import json
    import shutil
    import subprocess
    import sys

    import nibabel as nib
    from scipy import ndimage

    from medseg.data.layouts import detect_cases
    from medseg.pipelines import get_task

    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    (tmp_path / "pred").mkdir()
    for c in cases:
        shutil.copy(c.label, tmp_path / "pred" / f"{c.id}.nii.gz")
    # The first prediction gains one edema voxel as far from the tumour as the volume allows: a false WT lesion.
    img = nib.load(cases[0].label)
    labels = np.asarray(img.dataobj).astype(np.uint8)
    far = np.unravel_index(np.argmax(ndimage.distance_transform_edt(labels == 0)), labels.shape)
    labels[far] = 2
    nib.save(nib.Nifti1Image(labels, img.affine), tmp_path / "pred" / f"{cases[0].id}.nii.gz")

    def run(*fmt: str) -> str:
        cmd = [sys.executable, "-m", "medseg", "evaluate", "pred", str(brats2021_dir), *fmt]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    table = run()
    assert "evaluation of 4 cases" in table and (tmp_path / "metrics.summary.json").exists()
    assert "false-positive lesions" in table and "missed lesions" in table
    report = json.loads(run("--format", "json"))
    assert report["summary"]["dice_et"]["mean"] == 1.0 and len(report["cases"]) == len(cases)
    assert report["summary"]["lesion_fp_wt"]["mean"] == 1 / len(cases)
    assert (
        "373.13" in report["convention"]
        and "lesion-wise (BraTS 2023): a missed or false lesion" in report["convention"]
    )
    rows = list(csv.DictReader(io.StringIO(run("--format", "csv"))))
    assert [float(r["dice_et"]) for r in rows] == [1.0] * len(cases)
    assert [int(r["lesion_fp_wt"]) for r in rows] == [1] + [0] * (len(cases) - 1)
    assert [int(r["lesion_missed_wt"]) for r in rows] == [0] * len(cases)


def _prediction_folder(tmp_path, brats2021_dir, broken: dict[int, bytes]):
    """Perfect predictions (the labels themselves), with case i's file replaced by `broken[i]`."""
    import shutil

    from medseg.data.layouts import detect_cases
    from medseg.pipelines import get_task

    task = get_task("brats")
    _, cases = detect_cases(brats2021_dir, task.layouts)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i, c in enumerate(cases):
        target = pred / f"{c.id}.nii.gz"
        target.write_bytes(broken[i]) if i in broken else shutil.copy(c.label, target)
    return pred, cases, task


def test_broken_prediction_files_fail_their_case_and_the_others_are_scored(tmp_path, brats2021_dir):
    from medseg.evaluation.evaluate import evaluate_folder

    pred, cases, task = _prediction_folder(tmp_path, brats2021_dir, {1: b"", 2: b"not a nifti file at all"})
    result = evaluate_folder(pred, cases, task)
    assert [r["id"] for r in result.rows] == [cases[0].id, cases[3].id]
    reasons = dict(result.failed)
    assert "empty file" in reasons[cases[1].id] and "not a readable NIfTI file" in reasons[cases[2].id]


def test_when_every_case_fails_each_reason_is_reported_not_a_naming_hint(tmp_path, brats2021_dir):
    import json

    import typer
    from typer.testing import CliRunner

    from medseg.cli.evaluate import evaluate

    app = typer.Typer()
    app.command()(evaluate)

    broken = dict.fromkeys(range(4), b"junk")
    pred, _, _ = _prediction_folder(tmp_path, brats2021_dir, broken)
    for fmt in ("table", "csv", "json"):
        out = CliRunner().invoke(
            app, [str(pred), str(brats2021_dir), "--format", fmt, "--out", str(tmp_path / "metrics.csv")]
        )
        assert out.exit_code == 1 and out.stderr.count("not a readable NIfTI file") == 4, out.output
        assert "none of the 4 matched case(s)" in out.stderr and "<case_id>" not in out.output
    assert json.loads(out.stdout)["failed"][0]["error"].endswith("(fix: re-export the file as .nii or .nii.gz)")
    assert not (tmp_path / "metrics.csv").exists()


def test_a_prediction_folder_with_wrong_names_gets_the_naming_hint(tmp_path, brats2021_dir):
    from medseg.errors import DataError
    from medseg.workflows.evaluate import evaluate

    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    for i, c in enumerate(cases):  # names that look like no case (near misses: the test below)
        (pred / f"{c.id}.nii.gz").rename(pred / f"prediction_{i}.nii.gz")
    with pytest.raises(DataError, match=f"named <case_id>.nii.gz, e.g. {cases[0].id}.nii.gz"):
        evaluate(pred, brats2021_dir)


def test_an_unknown_run_fails_before_scoring_and_writes_nothing(tmp_path, brats2021_dir):
    from medseg.errors import TrackingError
    from medseg.workflows.evaluate import evaluate

    pred, _, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    from medseg.tracking.store import client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="no MLflow store at"):
        evaluate(pred, brats2021_dir, out=tmp_path / "metrics.csv", run_id="deadbeef", tracking_uri=uri)
    client(uri)  # the store exists, the run does not
    with pytest.raises(TrackingError, match="no run deadbeef in"):
        evaluate(pred, brats2021_dir, out=tmp_path / "metrics.csv", run_id="deadbeef", tracking_uri=uri)
    assert not (tmp_path / "metrics.csv").exists()  # was written, then the run was found missing


def test_a_labelled_case_without_prediction_is_counted_or_scored_as_empty(tmp_path, brats2021_dir):
    """The means of a test set with a prediction missing covered only the predicted cases, with nothing in the
    table or summary to show it; BraTS scores a missing prediction as an empty mask (--missing-as-empty)."""
    import csv
    import json
    import subprocess
    import sys

    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    (pred / f"{cases[1].id}.nii.gz").unlink()

    def run(*flags: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "medseg", "evaluate", "pred", str(brats2021_dir), *flags]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    default = run()
    title = "evaluation of 3 cases (1 labelled case(s) without prediction left out)"
    assert default.returncode == 0 and title in " ".join(default.stdout.split())
    assert f"not scored (--missing-as-empty scores them as empty): {cases[1].id}" in " ".join(default.stderr.split())
    summary = json.loads((tmp_path / "metrics.summary.json").read_text())
    assert summary["cases"] == 3 and summary["labelled_without_prediction"] == 1
    assert summary["metrics"]["dice_wt"]["mean"] == 1.0
    scored = run("--missing-as-empty")
    assert "evaluation of 4 cases (1 without prediction, scored as empty)" in " ".join(scored.stdout.split())
    report = json.loads((tmp_path / "metrics.summary.json").read_text())
    assert report["cases"] == 4 and report["missing_scored_as_empty"] is True
    assert report["metrics"]["dice_wt"]["mean"] == 0.75
    rows = {r["id"]: r for r in csv.DictReader((tmp_path / "metrics.csv").open())}
    assert float(rows[cases[1].id]["dice_wt"]) == 0.0 and float(rows[cases[1].id]["lesion_missed_wt"]) >= 1
    # Empty masks alone score no model: when every prediction fails, nothing is scored (and nothing logged).
    from medseg.evaluation.evaluate import evaluate_folder

    (tmp_path / "b").mkdir()
    broken, cases, task = _prediction_folder(tmp_path / "b", brats2021_dir, {0: b""})
    for c in cases[1:]:
        (broken / f"{c.id}.nii.gz").unlink()
    result = evaluate_folder(broken, cases, task, missing_as_empty=True)
    assert not result.rows and [cid for cid, _ in result.failed] == [cases[0].id]


def test_a_prediction_on_the_same_voxels_in_another_orientation_is_scored(tmp_path, brats2021_dir):
    """Another tool's prediction, axes flipped or permuted with a matching affine, was refused ("affine differs"),
    where a MONAI user reorienting both to RAS scores it perfect. A truly different grid still fails its case."""
    import nibabel as nib

    from medseg.data.layouts import detect_cases
    from medseg.pipelines import get_task

    task = get_task("brats")
    _, cases = detect_cases(brats2021_dir, task.layouts)
    flip, swap, shift = np.diag([-1.0, 1, 1, 1]), np.eye(4)[[1, 0, 2, 3]], np.eye(4)
    shift[0, 3] = 2.0  # 2 mm along the first axis: another grid
    for case, moved in zip(cases[:3], ("flip", "swap", "shift"), strict=True):
        gt = nib.load(case.label)
        labels, affine = np.asarray(gt.dataobj), gt.affine
        if moved == "flip":
            flip[0, 3] = labels.shape[0] - 1
            labels, affine = labels[::-1], affine @ flip
        elif moved == "swap":
            labels, affine = labels.transpose(1, 0, 2), affine @ swap
        else:
            affine = affine @ shift
        nib.save(nib.Nifti1Image(np.ascontiguousarray(labels), affine), tmp_path / f"{case.id}.nii.gz")
    from medseg.workflows.evaluate import evaluate

    outcome = evaluate(tmp_path, brats2021_dir, out=tmp_path / "m.csv")
    scored = {r["id"]: r for r in outcome.result.rows}
    assert scored[cases[0].id]["dice_wt"] == scored[cases[1].id]["dice_wt"] == 1.0
    # the failed case is named in the summary a script reads (the means leave it out)
    import json

    (failed,) = json.loads(outcome.summary_path.read_text())["failed"]
    assert failed["id"] == cases[2].id and "affine differs from the ground truth's" in failed["error"]


def test_summary_std_is_the_sample_std():
    """Population std (ddof 0) under the name "std" disagreed with pandas and the "mean ± SD" of papers."""
    from medseg.evaluation.evaluate import summarise

    summary = summarise([{"id": "a", "dice_wt": 0.0}, {"id": "b", "dice_wt": 1.0}])
    assert summary["dice_wt"]["std"] == pytest.approx(np.sqrt(0.5))
    assert summarise([{"id": "a", "dice_wt": 0.5}])["dice_wt"]["std"] is None  # undefined for one case (was 0.0)


def test_a_partial_evaluation_is_not_logged_over_the_runs_figures(tmp_path, brats2021_dir):
    """`evaluate --run` with one unreadable prediction logged the means of the others over the run's test_* metrics
    (exit 1, yet "logged 24 test metrics"): a run's test Dice silently moved to a subset's."""
    import mlflow

    from medseg.tracking.store import client
    from medseg.workflows.evaluate import evaluate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = client(uri).create_run("0").info.run_id
    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    full = evaluate(pred, brats2021_dir, out=tmp_path / "m.csv", run_id=run_id, tracking_uri=uri)
    logged = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    assert full.logged and logged["test_cases"] == len(cases) and "test_dice_wt" in logged
    (pred / f"{cases[0].id}.nii.gz").write_bytes(b"not a nifti file")
    partial = evaluate(pred, brats2021_dir, out=tmp_path / "m.csv", run_id=run_id, tracking_uri=uri)
    assert partial.result.failed and not partial.logged
    assert mlflow.MlflowClient(uri).get_run(run_id).data.metrics == logged


def test_an_evaluation_where_nothing_scores_leaves_no_earlier_results_at_out(tmp_path, brats2021_dir):
    """metrics.csv and its summary from an earlier evaluation stayed at --out, read as this failed one's."""
    from medseg.workflows.evaluate import evaluate

    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    evaluate(pred, brats2021_dir, out=tmp_path / "m.csv")
    assert (tmp_path / "m.csv").exists() and (tmp_path / "m.summary.json").exists()
    for c in cases:
        (pred / f"{c.id}.nii.gz").write_bytes(b"")
    outcome = evaluate(pred, brats2021_dir, out=tmp_path / "m.csv")
    assert not outcome.result.rows and len(outcome.result.failed) == len(cases)
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.summary.json").exists()
    import typer
    from typer.testing import CliRunner

    from medseg.cli.evaluate import evaluate as command

    app = typer.Typer()
    app.command()(command)
    out = CliRunner().invoke(app, [str(pred), str(brats2021_dir), "--out", str(tmp_path / "m.csv"), "--format", "csv"])
    assert out.exit_code == 1 and out.stdout.startswith("id,dice_et,")  # a header for scripts (stdout was empty)
    assert out.stdout.count("\n") == 1


def test_uncompressed_predictions_are_scored_and_a_case_with_both_forms_fails(tmp_path, brats2021_dir):
    """`.nii` predictions (other tools write them) were ignored: their cases read as "labelled without prediction"."""
    import nibabel as nib

    from medseg.evaluation.evaluate import evaluate_folder

    pred, cases, task = _prediction_folder(tmp_path, brats2021_dir, {})
    for c in cases[:2]:
        gz = pred / f"{c.id}.nii.gz"
        nib.save(nib.load(gz), pred / f"{c.id}.nii")
        if c is cases[0]:
            gz.unlink()
    result = evaluate_folder(pred, cases, task)
    assert [r["id"] for r in result.rows] == [c.id for c in cases if c is not cases[1]]
    assert result.rows[0]["dice_wt"] == 1.0 and not result.unmatched_gt
    assert result.failed == [
        (cases[1].id, f"case {cases[1].id}: both {cases[1].id}.nii and {cases[1].id}.nii.gz (fix: remove one)")
    ]


def test_a_ground_truth_folder_without_labelled_cases_is_named_with_where_the_labels_are(tmp_path, brats2021_dir):
    """`evaluate pred dataset/labelsTr` (nnU-Net's evaluate_folder takes that folder) said "pred: no prediction
    matches a labelled case (fix: the ground-truth folder has no label files)": the wrong folder, no way out."""
    import json
    import shutil

    from medseg.errors import DataError
    from medseg.workflows.evaluate import evaluate

    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    labels = tmp_path / "msd" / "labelsTr"
    labels.mkdir(parents=True)
    (tmp_path / "msd" / "dataset.json").write_text("{}")
    for c in cases:
        shutil.copy(c.label, labels / f"{c.id}.nii.gz")
    with pytest.raises(DataError) as err:
        evaluate(pred, labels)
    assert err.value.path == str(labels) and "holds no labelled case" in err.value.message
    assert err.value.hint.startswith(f"pass the dataset folder {labels.parent}")
    (pred / f"{cases[1].id}.nii.gz").unlink()
    (pred / f"{cases[1].id}.nii.gz").mkdir()  # a folder with a NIfTI name is no prediction (it was "missing file")
    outcome = evaluate(pred, brats2021_dir, out=tmp_path / "m.csv")
    assert not outcome.result.failed and outcome.result.unmatched_gt == [cases[1].id]
    summary = json.loads((tmp_path / "m.summary.json").read_text())  # the ids, as --format json lists them
    assert summary["truth_without_prediction"] == [cases[1].id] and summary["predictions_without_truth"] == []


def test_predictions_named_almost_like_a_case_get_the_name_they_need(tmp_path, brats2021_dir):
    """`<id>_pred.nii.gz` files gave "prediction files must be named <case_id>.nii.gz" with an unrelated example,
    or, beside matched files, only a list of "predictions without ground truth" and exit 0."""
    from medseg.errors import DataError
    from medseg.evaluation.evaluate import near_misses
    from medseg.workflows.evaluate import evaluate

    gt = ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00013", "case_1"]
    preds = ["BraTS2021_00001_pred", "brats2021_00002", "00003", "seg", "BraTS2021", "case_12"]
    assert near_misses(preds, gt) == {
        "BraTS2021_00001_pred": "BraTS2021_00001",
        "brats2021_00002": "BraTS2021_00002",
        "00003": "BraTS2021_00003",
    }  # "seg" matches nothing, "BraTS2021" every case, "case_12" is not "case_1": no guess
    pred, cases, _ = _prediction_folder(tmp_path, brats2021_dir, {})
    for c in cases:
        (pred / f"{c.id}.nii.gz").rename(pred / f"{c.id}_pred.nii.gz")
    with pytest.raises(DataError) as err:
        evaluate(pred, brats2021_dir)
    first = cases[0].id
    assert f"{first}_pred looks like {first} (rename it {first}.nii.gz)" in err.value.hint


def test_a_prediction_with_codes_the_dataset_lacks_is_the_prediction_s_fault(tmp_path, brats2021_dir):
    """Its hint told the user to name every value in dataset.json: the ground truth's advice, for a model of
    another label convention."""
    import nibabel as nib

    from medseg.evaluation.evaluate import evaluate_folder

    pred, cases, task = _prediction_folder(tmp_path, brats2021_dir, {})
    img = nib.load(pred / f"{cases[0].id}.nii.gz")
    labels = np.asarray(img.dataobj).astype(np.uint8)
    labels[labels == 4] = 3  # BraTS 2023's enhancing code in a 2021 dataset
    labels.flat[0] = 3
    nib.save(nib.Nifti1Image(labels, img.affine), pred / f"{cases[0].id}.nii.gz")
    (failed,) = evaluate_folder(pred, cases, task).failed
    assert failed[0] == cases[0].id and "prediction: label values [3] are not in" in failed[1]
    assert "a model trained on this dataset's label convention" in failed[1]
