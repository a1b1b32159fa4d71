"""`medseg runs`, `medseg models` and `medseg ui` against a real SQLite store with two trained runs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medseg.data.manifest import save_manifest
from medseg.data.validate import scan_dataset
from medseg.pipelines import get_task
from medseg.workflows.train import TrainRequest, run_training
from tests.conftest import signals_as_default

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(brats2021_dir, tmp_path_factory) -> tuple[str, list[str], Path]:
    tmp = tmp_path_factory.mktemp("review")
    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    save_manifest(manifest, tmp / "m.json")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_ids = []
    for name, cross in (("cross", "true"), ("early", "false")):
        overrides = [
            "train.epochs=2",
            "train.val_every=1",
            "train.samples_per_volume=1",
            "train.overlays=1",
            "data.num_workers=0",
            "tracking.system_metrics=false",
            f"data.cache_dir={tmp / 'cache'}",
            f"model.kwargs.cross_modal={cross}",
        ]
        request = TrainRequest(
            "brats",
            config="brats_smoke",
            overrides=overrides,
            manifest=tmp / "m.json",
            fold=0,
            device="cpu",
            tracking_uri=uri,
            experiment="review",
            run_name=name,
            register="brats-auto" if cross == "true" else None,
            out=tmp / "runs",
        )
        run_ids.append(run_training(request).run_id)
    return uri, run_ids, tmp


def medseg(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "medseg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_runs_list_show_compare(store):
    uri, (a, b), tmp = store
    listed = medseg("runs", "list", "--experiment", "review", "--tracking-uri", uri, cwd=tmp).stdout
    assert a in listed and b in listed and "transunet3d_tiny" in listed
    shown = medseg("runs", "show", a, "--tracking-uri", uri, cwd=tmp).stdout
    assert "val_dice_mean" in shown and "models:/" in shown and "config.yaml" in shown
    plot = tmp / "curves.png"
    compared = medseg("runs", "compare", a, b, "--plot", str(plot), "--tracking-uri", uri, cwd=tmp).stdout
    assert "model.kwargs.cross_modal" in compared and "best val_dice_mean" in compared
    assert plot.stat().st_size > 1000


def test_models_register_and_registry_list(store):
    uri, (a, _), tmp = store
    # by the short id `runs compare` labels runs with (it was "no run")
    args = ["models", "register", a[:8], "--name", "brats-test", "--alias", "champion", "--tracking-uri", uri]
    out = medseg(*args, cwd=tmp)
    assert "v1" in out.stdout, out.stderr
    assert "Created version" not in out.stderr  # MLflow's own print, beside medseg's line
    registry = medseg("models", "list", "--registry", "--tracking-uri", uri, cwd=tmp).stdout
    assert "brats-test" in registry and "champion" in registry
    assert "brats-auto" in registry  # `train --register` registered the first run and made it champion
    reserved = subprocess.run(
        [
            sys.executable,
            "-m",
            "medseg",
            "models",
            "register",
            a,
            "--name",
            "x",
            "--alias",
            "latest",
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert reserved.returncode == 1 and "Traceback" not in reserved.stderr
    assert "invalid alias 'latest'" in reserved.stderr
    for name, alias, said in (("x", "v3", "invalid alias 'v3'"), ("a/b", "ok", "invalid registered model name")):
        args = ["models", "register", a, "--name", name, "--alias", alias, "--tracking-uri", uri]
        bad = subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True, cwd=tmp)
        assert bad.returncode == 1 and said in bad.stderr, bad.stderr
    # refused before registering: MLflow checked the alias after creating the version, left behind without it
    names = [
        r["name"]
        for r in json.loads(
            medseg("models", "list", "--registry", "--format", "json", "--tracking-uri", uri, cwd=tmp).stdout
        )
    ]
    assert "x" not in names and "a/b" not in names
    assert "brats-test@champion" in medseg("runs", "show", a, "--tracking-uri", uri, cwd=tmp).stdout


def test_ui_serves_the_run_over_http(store):
    uri, (a, _), tmp = store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen(
        [sys.executable, "-m", "medseg", "ui", "--port", str(port), "--tracking-uri", uri],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=signals_as_default,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={a}"
                body = urllib.request.urlopen(url, timeout=3).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or ui.poll() is not None:
                    pytest.fail("medseg ui did not serve")
                time.sleep(0.5)
        assert a in body and "val_dice_mean" in body
    finally:
        ui.send_signal(signal.SIGHUP)  # a closed terminal: the server (mlflow -> uvicorn -> workers) must go too
        ui.wait(timeout=30)
    assert ui.returncode == 129
    deadline = time.monotonic() + 15
    while _serves(port):
        assert time.monotonic() < deadline, "the MLflow server outlived `medseg ui`"
        time.sleep(0.2)


def _serves(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("where", ["80-column terminal", "pipe"])
def test_runs_list_never_cuts_ids_or_numbers(store, where):
    uri, (a, b), tmp = store
    env = {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"} if where != "pipe" else {"COLUMNS": "80"}
    shown = medseg("runs", "list", "--experiment", "review", "--tracking-uri", uri, cwd=tmp, env=env).stdout
    shown = re.sub(r"\x1b\[[0-9;]*m", "", shown)  # a terminal gets bold and italics
    assert a in shown and b in shown and "…" not in shown
    as_json = json.loads(medseg("runs", "list", "--format", "json", "--tracking-uri", uri, cwd=tmp).stdout)
    for run in as_json:
        assert f"{run['best_val_dice_mean']:.3f}" in shown
    if where != "pipe":
        assert max(len(line) for line in shown.splitlines()) <= 80 and "left out" in shown


def test_runs_and_evaluate_speak_csv_and_json(store):
    uri, (a, b), tmp = store
    rows = list(
        csv.DictReader(io.StringIO(medseg("runs", "list", "--format", "csv", "--tracking-uri", uri, cwd=tmp).stdout))
    )
    assert {r["run_id"] for r in rows} >= {a, b} and all(r["best_val_dice_mean"] for r in rows)
    shown = json.loads(medseg("runs", "show", a, "--format", "json", "--tracking-uri", uri, cwd=tmp).stdout)[0]
    assert shown["run_id"] == a and any(m["metric"] == "val_dice_mean" for m in shown["metrics"])
    assert set(shown["postprocess"]) == {"ET", "TC", "WT"}
    assert shown["params"]["tracking.experiment"] == "review"  # the --experiment given, not the config's "medseg"
    assert shown["params"]["tracking.register_name"] == "brats-auto"
    compared = json.loads(medseg("runs", "compare", a, b, "--format", "json", "--tracking-uri", uri, cwd=tmp).stdout)
    assert [r["run_id"] for r in compared] == [a, b] and "model.kwargs.cross_modal" in compared[0]


def test_runs_are_ranked_among_every_run_of_the_store(tmp_path):
    """Only the 50 latest runs were ranked: an older best run vanished from `runs list --limit 3`."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from medseg.errors import TrackingError
    from medseg.tracking.review import list_runs

    uri = f"sqlite:///{tmp_path / 'many.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("many")
    for i in range(56):
        run = c.create_run(exp, run_name=f"r{i}", start_time=1000 + i)
        dice, loss = 0.99 if i == 0 else 0.1 + i / 1000, 1.0 - i / 100
        c.log_batch(run.info.run_id, metrics=[Metric("val_dice_mean", dice, 0, 0), Metric("train_loss", loss, 0, 0)])
        c.set_terminated(run.info.run_id)
    best = list_runs(uri, None, "val_dice_mean", 3)
    assert [s.name for s in best] == ["r0", "r55", "r54"] and best[0].best_epoch_number == 1  # as training prints
    assert [s.name for s in list_runs(uri, None, "train_loss", 2)] == ["r55", "r54"]  # losses: lowest first
    assert [s.name for s in list_runs(uri, None, "start_time", 2)] == ["r55", "r54"]
    with pytest.raises(TrackingError, match="no run has the metric 'val_dice'"):
        list_runs(uri, None, "val_dice", 3)


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path):
    """A typo in --tracking-uri made a new empty store and listed "0 run(s)"."""
    from medseg.errors import TrackingError
    from medseg.tracking.review import get_run, list_runs

    uri = f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match=r"no MLflow store at .*typo/mlflow\.db"):
        list_runs(uri, None, "val_dice_mean", 5)
    with pytest.raises(TrackingError, match="no MLflow store"):
        get_run(uri, "0123")
    from medseg.inference.model_source import load_bundle

    for model in ("runs:/0123/model", "models:/brats/1"):  # predict/distill/prune --model: also with --no-tracking
        with pytest.raises(TrackingError, match=r"no MLflow store at .*typo/mlflow\.db"):
            load_bundle(model, uri)
    assert not (tmp_path / "typo").exists()


def test_runs_without_the_default_metric_are_still_listed(tmp_path):
    """A first run that crashed before validating: `runs list` must show it, not fail on the default --sort."""
    from mlflow import MlflowClient

    from medseg.tracking.review import list_runs, lower_is_better

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = MlflowClient(uri)
    c.create_run(c.create_experiment("e"), run_name="crashed")
    assert [s.name for s in list_runs(uri, None, "val_dice_mean", 5)] == ["crashed"]
    assert lower_is_better("train_loss") and lower_is_better("elapsed_s") and lower_is_better("val_hd95_wt")
    assert not lower_is_better("train_samples_per_s") and not lower_is_better("val_dice_mean")
