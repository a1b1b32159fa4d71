"""`medseg runs`, `models list --registry` and `ui` on a small hand-made store: complete csv/json, refusals, warnings.

The store is written with MlflowClient directly (no training), so each test takes well under a second.
"""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli import models, runs
from medseg.cli.ui import ui
from medseg.errors import MedsegError, TrackingError


def _log_run(c, exp: str, name: str, task: str, dice: dict[str, list[float]]) -> str:
    from mlflow.entities import Metric, Param

    run_id = c.create_run(exp, run_name=name, tags={"task": task}).info.run_id
    regions = [k for k in dice if k != "mean"]
    params = [Param("model_name", "unet"), Param("train.lr", "0.001" if task == "brats" else "0.01")]
    params += [Param(f"postprocess.{r}", "largest component") for r in regions]
    metrics = [Metric("train_loss", 1.0 - 0.1 * step, 0, step) for step in range(2)]
    metrics += [Metric(f"val_dice_{k}", v, 0, step) for k, values in dice.items() for step, v in enumerate(values)]
    c.log_batch(run_id, metrics=metrics, params=params)
    c.log_text(run_id, "model: unet", "config.yaml")
    c.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict[str, str], Path]:
    """Two BraTS runs and one generic run (other regions), plus a registered version with an alias."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("runs_formats")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("e", artifact_location=(tmp / "artifacts").as_uri())
    brats = {"et": [0.5, 0.6], "tc": [0.6, 0.7], "wt": [0.7, 0.8], "mean": [0.6, 0.7]}
    ids = {
        "brats": _log_run(c, exp, "brats", "brats", brats),
        "brats2": _log_run(c, exp, "brats2", "brats", {k: [v[0]] for k, v in brats.items()}),
        "generic": _log_run(c, exp, "generic", "generic", {"organ": [0.9, 0.95], "mean": [0.9, 0.95]}),
    }
    c.create_registered_model("seg")
    mv = c.create_model_version("seg", f"runs:/{ids['brats']}/model", ids["brats"], tags={"val_dice_mean": "0.7"})
    c.set_registered_model_alias("seg", "champion", mv.version)
    return uri, ids, tmp


def _invoke(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, list(args))


def test_runs_show_csv_holds_what_the_json_holds(store):
    """The csv held only the metrics: params, post-processing, artifacts and model were silently left out."""
    uri, ids, _ = store
    shown = json.loads(_invoke(runs.app, "show", ids["brats"], "--format", "json", "--tracking-uri", uri).stdout)[0]
    out = _invoke(runs.app, "show", ids["brats"], "--format", "csv", "--tracking-uri", uri)
    rows = {(r["section"], r["key"]): r["value"] for r in csv.DictReader(io.StringIO(out.stdout))}
    assert rows[("run", "run_id")] == ids["brats"] and rows[("run", "epochs")] == "2"
    assert all(rows[("params", k)] == v for k, v in shown["params"].items())
    assert rows[("postprocess", "et")] == "largest component" and rows[("artifacts", "0")] == "config.yaml"
    assert (
        float(rows[("metrics", "val_dice_mean")]) == 0.7
        and float(rows[("metrics_at_best_epoch", "val_dice_et")]) == 0.6
    )


def test_runs_list_csv_of_an_empty_store_is_the_header(tmp_path):
    """A script reading the csv got nothing at all, not even the header."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(uri).search_experiments()  # creates the store's tables
    out = _invoke(runs.app, "list", "--format", "csv", "--tracking-uri", uri)
    assert out.exit_code == 0 and out.stdout.splitlines() == [
        "run_id,name,model,status,fold,epochs,duration_s,best_epoch"
    ]


def test_runs_compare_warns_when_the_runs_score_other_regions(store):
    """`best val_dice_mean 0.950 (+0.250)` between a BraTS and a generic run read as a like-for-like gain."""
    uri, ids, _ = store
    unlike = _invoke(runs.app, "compare", ids["brats"], ids["generic"], "--format", "csv", "--tracking-uri", uri)
    assert "different tasks (brats, generic)" in unlike.stderr and len(unlike.stderr.strip().splitlines()) == 1
    assert next(csv.DictReader(io.StringIO(unlike.stdout)))["run_id"] == ids["brats"]  # stdout stays parseable
    alike = _invoke(runs.app, "compare", ids["brats"], ids["brats2"], "--tracking-uri", uri)
    assert alike.exit_code == 0 and "warning" not in alike.stderr


def test_runs_of_one_task_with_other_regions_are_unlike():
    from medseg.tracking.review import RunSummary, unlike_runs

    def run(task: str, *regions: str) -> RunSummary:
        metrics = {f"val_dice_{r}": 0.5 for r in (*regions, "mean")} if regions else {}
        return RunSummary("id", task, "FINISHED", {}, {"task": task}, metrics, 0, 1)

    assert "different regions (lesion, prostate vs organ)" in unlike_runs(
        [run("generic", "prostate", "lesion"), run("generic", "organ")]
    )
    assert unlike_runs([run("brats", "et", "tc", "wt"), run("brats", "wt", "tc", "et")]) is None
    assert unlike_runs([run("brats", "et", "tc", "wt"), run("brats")]) is None  # crashed before validating


def test_runs_compare_refuses_a_run_given_twice(store):
    """`compare A A` printed a table of +0.000 deltas."""
    uri, ids, _ = store
    out = _invoke(runs.app, "compare", ids["brats"], ids["brats2"], ids["brats"], "--tracking-uri", uri)
    assert out.exit_code == 2 and f"run {ids['brats']} given more than once" in out.output


def test_runs_compare_refuses_a_plot_that_is_not_png(store):
    """`--plot x.txt` wrote a PNG under a .txt name."""
    uri, ids, tmp = store
    out = _invoke(runs.app, "compare", ids["brats"], ids["brats2"], "--plot", str(tmp / "x.txt"), "--tracking-uri", uri)
    assert isinstance(out.exception, MedsegError) and "--plot writes a PNG image" in str(out.exception)
    assert "x.png" in str(out.exception) and out.stdout == "" and not (tmp / "x.txt").exists()


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_models_list_registry_speaks_json_and_csv(store, fmt):
    uri, ids, _ = store
    out = _invoke(models.app, "list", "--registry", "--format", fmt, "--tracking-uri", uri)
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout) if fmt == "json" else list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["name"], str(r["version"]), r["run_id"]) for r in records] == [("seg", "1", ids["brats"])]
    assert records[0]["aliases"] == (["champion"] if fmt == "json" else "champion")
    assert float(records[0]["val_dice_mean"]) == 0.7


def test_models_list_registry_of_an_empty_registry_is_the_csv_header(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(uri).search_experiments()
    out = _invoke(models.app, "list", "--registry", "--format", "csv", "--tracking-uri", uri)
    assert out.exit_code == 0 and out.stdout.splitlines() == ["name,version,aliases,val_dice_mean,run_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_app(monkeypatch) -> typer.Typer:
    """`medseg ui` whose server, if it were ever started, fails the test instead of serving."""

    def serve(command):
        raise AssertionError(f"the server was started: {command}")

    monkeypatch.setattr("medseg.tracking.ui_server.serve", serve)
    app = typer.Typer()
    app.command()(ui)
    return app


def test_ui_refuses_a_store_that_does_not_exist(tmp_path, ui_app):
    """A mistyped path became a new, empty store served as an empty UI, while `runs list` refused it."""
    uri = f"sqlite:///{tmp_path / 'nope.db'}"
    out = _invoke(ui_app, "--port", str(_free_port()), "--tracking-uri", uri)
    assert isinstance(out.exception, TrackingError) and f"no MLflow store at {tmp_path / 'nope.db'}" in str(
        out.exception
    )
    assert "default" not in str(out.exception) and not (tmp_path / "nope.db").exists()


def test_ui_without_a_store_in_this_folder_says_to_train_or_pass_the_uri(tmp_path, ui_app, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = _invoke(ui_app, "--port", str(_free_port()))
    message = str(out.exception)
    assert isinstance(out.exception, TrackingError) and "(the default: no --tracking-uri" in message
    assert "train first" in message and "pass the --tracking-uri" in message and not (tmp_path / "mlflow.db").exists()


def test_runs_compare_keeps_runs_that_share_a_name_apart(tmp_path, monkeypatch):
    """Every demo run is named "demo": keyed by name, the plot drew one curve and the table two "demo" columns."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    dice = {"wt": [0.5, 0.6], "mean": [0.5, 0.6]}
    a, b = (_log_run(c, exp, "demo", "brats", dice) for _ in range(2))
    drawn = {}

    def draw(curves):
        drawn.update(curves)
        return np.zeros((2, 2, 3), np.uint8)

    monkeypatch.setattr("medseg.viz.curves.compare_curves", draw)
    out = _invoke(runs.app, "compare", a, b, "--plot", str(tmp_path / "c.png"), "--tracking-uri", uri)
    assert out.exit_code == 0, out.output
    assert sorted(drawn) == sorted([f"demo {a[:8]}", f"demo {b[:8]}"])
    assert [e for e, _ in drawn[f"demo {a[:8]}"]] == [1, 2]  # epochs from 1, as the training log counts them
    assert f"demo {a[:8]}" in out.stdout and f"demo {b[:8]}" in out.stdout


def test_a_path_given_as_tracking_uri_is_one_line_with_the_uri_to_write(tmp_path, monkeypatch):
    """MLflow read `medseg_demo/mlflow.db` as its deprecated file store and failed with a traceback."""
    monkeypatch.chdir(tmp_path)
    out = _invoke(runs.app, "list", "--tracking-uri", "medseg_demo/mlflow.db")
    assert isinstance(out.exception, TrackingError)
    assert "'medseg_demo/mlflow.db' is a path, not a URI" in str(out.exception)
    assert f"sqlite:///{tmp_path.resolve() / 'medseg_demo' / 'mlflow.db'}" in str(out.exception)
    (tmp_path / "mlruns").mkdir()  # a folder: the hint names a database file in it
    out = _invoke(runs.app, "list", "--tracking-uri", "mlruns")
    assert f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}" in str(out.exception)


def test_an_unused_bad_uri_stops_nothing(tmp_path, monkeypatch):
    """Checked where a store is opened: an untracked run with a bare-path MLFLOW_TRACKING_URI in its environment
    (or the review commands printed after training) must not fail on it."""
    from medseg.tracking import resolve_tracking_uri
    from medseg.tracking.store import check_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlruns")
    assert resolve_tracking_uri() == "mlruns"
    with pytest.raises(TrackingError, match="is a path"):
        check_uri(resolve_tracking_uri())
    for fine in ("sqlite:///x.db", "http://host:5000", "postgresql://u@h/db", "databricks", "file:///tmp/mlruns"):
        check_uri(fine)


@pytest.mark.parametrize(("content", "said"), [(b"", "an empty file"), (b"x\n", "not an SQLite database")])
def test_a_store_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path, content, said):
    """A junk file crashed `runs list` in sqlalchemy; an empty one was turned into a 1 MB store by a read command."""
    db = tmp_path / "junk.db"
    db.write_bytes(content)
    out = _invoke(runs.app, "list", "--tracking-uri", f"sqlite:///{db}")
    assert isinstance(out.exception, TrackingError) and said in str(out.exception)
    assert db.read_bytes() == content


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ui_points_at_the_latest_runs_experiment_and_creates_none(store, monkeypatch, tmp_path):
    """It created an empty "medseg" experiment in the store (a read-only command) and linked to it, not to the
    experiment that holds the runs."""
    import shutil

    from mlflow import MlflowClient

    uri = store[0]
    copy = tmp_path / "mlflow.db"  # the module's store stays as the other tests expect it
    shutil.copy(Path(uri.removeprefix("sqlite:///")), copy)
    uri = f"sqlite:///{copy}"
    c = MlflowClient(uri)
    newer = c.create_experiment("newer", artifact_location=(tmp_path / "artifacts").as_uri())
    _log_run(c, newer, "latest", "brats", {"wt": [0.5], "mean": [0.5]})
    monkeypatch.setattr("medseg.tracking.ui_server.serve", lambda command: None)
    app = typer.Typer()
    app.command()(ui)
    before = [e.name for e in c.search_experiments()]
    host = "::1" if _has_ipv6_loopback() else "127.0.0.1"
    out = _invoke(app, "--port", str(_free_port()), "--host", host, "--tracking-uri", uri)
    assert out.exit_code == 0, out.output
    assert f"/#/experiments/{newer}/runs" in out.stdout and [e.name for e in c.search_experiments()] == before
    assert ("http://[::1]:" if host == "::1" else "http://127.0.0.1:") in out.stdout
    assert _invoke(app, "--port", "70000", "--tracking-uri", uri).exit_code == 2  # a usage error, no traceback


def test_runs_list_shows_the_value_it_sorts_by(store):
    """`--sort train_loss` ranked the runs by a value no column or JSON field showed."""
    uri, ids, _ = store
    out = _invoke(runs.app, "list", "--sort", "train_loss", "--format", "json", "--tracking-uri", uri)
    listed = json.loads(out.stdout)
    assert [r["train_loss"] for r in listed] == sorted(r["train_loss"] for r in listed)  # losses rank ascending
    assert {r["run_id"]: r["train_loss"] for r in listed}[ids["brats"]] == pytest.approx(0.9)  # its last value
    table = _invoke(runs.app, "list", "--sort", "train_loss", "--tracking-uri", uri).stdout
    assert "train_loss" in table and "0.900" in table
    default = json.loads(_invoke(runs.app, "list", "--format", "json", "--tracking-uri", uri).stdout)
    assert "val_dice_mean" not in default[0] and "best_val_dice_mean" in default[0]  # no second copy of the Dice


def test_a_run_killed_without_a_trace_shows_how_long_it_has_been_silent(tmp_path):
    """A SIGKILLed training stays RUNNING in MLflow for ever; `runs list` said only "running"."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp, run_name="killed").info.run_id
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000 - 5 * 60 * 1000
    c.log_batch(run, metrics=[Metric("train_loss", 1.0, two_hours_ago, 0)])  # never terminated
    table = _invoke(runs.app, "list", "--tracking-uri", uri).stdout
    assert "running, last epoch 2h05m" in " ".join(table.split())


@pytest.mark.parametrize(("fmt", "ok"), [("JSON", True), ("Csv", True), ("xml", False)])
def test_format_is_checked_before_work_and_case_blind(store, fmt, ok):
    """`--format JSON` was refused as not one of table, csv, json."""
    uri, ids, _ = store
    out = _invoke(models.app, "list", "--registry", "--format", fmt, "--tracking-uri", uri)
    if not ok:
        assert out.exit_code == 2 and "one of table, csv, json" in out.output
        return
    assert out.exit_code == 0, out.output
    text = out.stdout
    records = json.loads(text) if fmt == "JSON" else list(csv.DictReader(io.StringIO(text)))
    assert [r["run_id"] for r in records] == [ids["brats"]]


def test_runs_show_and_compare_take_the_short_ids_they_print(store, monkeypatch):
    """`runs compare` labels runs of one name by their first 8 characters; pasting that back was "no run"."""
    from types import SimpleNamespace

    from medseg.tracking import review

    uri, ids, _ = store
    short = {k: v[:8] for k, v in ids.items()}
    shown = json.loads(_invoke(runs.app, "show", short["brats"], "--format", "json", "--tracking-uri", uri).stdout)
    assert shown[0]["run_id"] == ids["brats"] and shown[0]["artifacts"] == ["config.yaml"]
    out = _invoke(runs.app, "compare", short["brats"], short["brats2"], "--format", "json", "--tracking-uri", uri)
    assert [r["run_id"] for r in json.loads(out.stdout)] == [ids["brats"], ids["brats2"]]
    twice = _invoke(runs.app, "compare", short["brats"], ids["brats"], "--tracking-uri", uri)
    assert twice.exit_code == 2 and "the same run given more than once" in twice.output
    for wrong in ("zzzz1234", "abc"):  # not hex, too short: no search
        with pytest.raises(TrackingError, match=f"no run {wrong}"):
            review.get_run(uri, wrong, prefix=True)
    twins = [SimpleNamespace(info=SimpleNamespace(run_id=f"abcd{i}" + "0" * 27)) for i in range(2)]
    monkeypatch.setattr(review, "_every_run", lambda *a: twins)
    with pytest.raises(TrackingError, match="run id prefix abcd matches 2 runs"):
        review.get_run(uri, "abcd", prefix=True)
