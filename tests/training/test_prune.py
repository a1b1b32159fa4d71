"""`medseg prune` end to end: a trained model loses channels, fine-tunes, and is a normal bundle afterwards."""

from __future__ import annotations

import pytest
import torch

from medseg.inference.model_source import load_bundle
from medseg.io.bundle import load_checkpoint
from medseg.workflows.train import TrainRequest, run_training
from tests.cli.test_cli import medseg

FAST = ["train.epochs=1", "train.val_every=1", "train.samples_per_volume=1", "train.overlays=0", "data.num_workers=0"]


@pytest.fixture(scope="module")
def pruned(brats2021_manifest, tmp_path_factory):
    """A 1-epoch early-fusion TransUNet-3D, then the same pruned by half and fine-tuned for one epoch."""
    tmp = tmp_path_factory.mktemp("prune")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"

    def train(name: str, overrides: list[str]):
        request = TrainRequest(
            "brats",
            config="brats_smoke",
            overrides=[*FAST, f"data.cache_dir={tmp / 'cache'}", "tracking.system_metrics=false", *overrides],
            manifest=brats2021_manifest,
            fold=0,
            device="cpu",
            tracking_uri=uri,
            experiment="prune",
            run_name=name,
            out=tmp / "runs",
        )
        return run_training(request)

    source = train("source", ["model.kwargs.cross_modal=false"])
    # Pruned and distilled from the unpruned source at once: the usual way to win back what pruning costs.
    # The config's model settings are ignored: a pruned model keeps its source's network and patch size.
    src = source.result.best_path
    result = train(
        "pruned", [f"prune.source={src}", "prune.amount=0.5", "model.name=segresnet", f"distill.teacher={src}"]
    )
    return uri, source, result


def test_pruned_model_is_smaller_linked_to_its_source_and_predicts(pruned):
    import mlflow

    uri, source, result = pruned
    client = mlflow.MlflowClient(uri)
    run, src_run = client.get_run(result.run_id), client.get_run(source.run_id)
    assert run.data.tags["medseg.pruned_from_run_id"] == source.run_id
    assert run.data.tags["medseg.teacher_run_id"] == source.run_id
    assert run.data.params["model_name"] == "transunet3d_tiny" and run.data.params["prune.amount"] == "0.5"
    assert int(run.data.params["param_count"]) < 0.8 * int(src_run.data.params["param_count"])
    for bundle in (load_bundle(str(result.result.best_path)), load_bundle(result.result.model_uri, uri)):
        assert bundle.structure, "the pruned layout travels with the weights"
        model = bundle.build_model()
        assert sum(p.numel() for p in model.parameters()) == int(run.data.params["param_count"])
        with torch.no_grad():
            assert model(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_the_pruned_model_is_judged_against_its_unpruned_source_on_the_same_cases(pruned):
    """`prune --amount 0.3` took a model's Dice from 0.76 to 0 and said nothing: the run now validates the source
    before pruning, logs it and hands it to the report. Same cases and rules as the source's own final validation."""
    import mlflow

    uri, source, result = pruned
    client = mlflow.MlflowClient(uri)
    logged = client.get_run(result.run_id).data.metrics["source_val_dice_mean"]
    src = client.get_run(source.run_id).data.metrics
    own = sum(src[f"val_pp_dice_{r}"] for r in ("et", "tc", "wt")) / 3  # the source's post-processing, chosen
    assert logged == pytest.approx(own, abs=1e-6)
    assert result.result.source_dice == pytest.approx(logged)


@pytest.mark.parametrize(("pruned_dice", "warned"), [(0.75, False), (0.70, True)])
def test_a_pruning_that_costs_dice_is_a_warning_with_the_way_back(pruned_dice, warned, monkeypatch):
    import io

    from rich.console import Console

    from medseg.cli import train as cli_train

    out = io.StringIO()
    monkeypatch.setattr(cli_train, "console", Console(file=out, width=200))
    cli_train._print_pruning_cost(pruned_dice, 0.76)
    text = out.getvalue()
    assert f"val Dice pruned {pruned_dice:.3f}, unpruned source 0.760 on the same cases" in text
    assert ("warning" in text and "a smaller --amount" in text) is warned


def test_a_pruned_run_resumes_into_the_same_layout(pruned, brats2021_manifest, tmp_path):
    uri, _, result = pruned
    request = TrainRequest(
        "brats",
        manifest=brats2021_manifest,
        fold=0,
        device="cpu",
        tracking_uri=uri,
        resume=str(result.result.last_path),
        overrides=["train.epochs=2"],
        out=tmp_path / "runs",
    )
    resumed = run_training(request)  # re-prunes the source (deterministic), then loads the pruned weights
    assert resumed.run_id == result.run_id and resumed.result.epochs_run == 2
    before, after = (
        load_checkpoint(p)["bundle"]["structure"] for p in (result.result.best_path, resumed.result.last_path)
    )
    assert after == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--amount", "1.5"], "invalid value --amount 1.5: Input should be less than 1"),
        (["--amount", "0.001"], "--amount 0.001 removes no channel of"),  # was a 'pruned' run of the same network
        (["--amount", "0.3", "--resume", "gone/last.pt"], "checkpoint not found"),  # the advice after a Ctrl-C
        (["--amount", "0.3", "--model", "nope.pt"], "model not found"),
        (["--amount", "0.3", "--model", "exported.onnx"], "an ONNX export holds no PyTorch weights"),
    ],
)
def test_prune_user_errors_are_one_line(extra, message, pruned, brats2021_manifest, tmp_path):
    _, source, _ = pruned
    (tmp_path / "exported.onnx").write_bytes(b"\x08\x07onnx")  # not read: the suffix decides
    args = ["--model", str(source.result.best_path), *extra] if "--model" not in extra else extra
    out = medseg("prune", *args, "--manifest", str(brats2021_manifest), "--no-tracking", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_resuming_with_other_options_is_refused_in_one_line(pruned, brats2021_manifest, tmp_path):
    """The options were re-applied to the resumed run: another --amount pruned the source again and failed to load
    the checkpoint with a raw size-mismatch traceback; a left-out --minutes or --lr silently changed the run."""
    _, source, result = pruned
    lr = load_checkpoint(result.result.last_path)["config"]["train"]["lr"]
    args = ["--model", str(source.result.best_path), "--resume", str(result.result.last_path), "--amount", "0.3"]
    same = ["--set", "train.max_minutes=null", "--set", f"train.lr={lr}"]  # as the fixture trained (no budget)
    out = medseg("prune", *args, *same, "--manifest", str(brats2021_manifest), "--no-tracking", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "--amount 0.3 does not match the run being resumed: its prune.amount is 0.5" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_family_torch_pruning_cannot_trace_is_refused_in_one_line(brats2021_manifest, tmp_path):
    from medseg.io.bundle import save_checkpoint
    from medseg.nets import create_model
    from tests.conftest import make_bundle

    bundle = make_bundle()
    bundle.model_name, bundle.model_kwargs = "swinunet3d_tiny", {"in_channels": 4, "out_channels": 3}
    bundle.state_dict = create_model("swinunet3d_tiny").state_dict()
    bundle.patch_size = [64, 64, 64]
    path = tmp_path / "swin.pt"
    save_checkpoint({"bundle": bundle.to_dict()}, path)
    out = medseg("prune", "--model", str(path), "--amount", "0.3", "--manifest", str(brats2021_manifest),
                 "--no-tracking", "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "data.spacing=native",
                 cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "cannot be pruned structurally" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()  # refused before any case is cached
