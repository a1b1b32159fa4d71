"""Train a task end to end: config, manifest (scanned on rank 0), runtime and device, split, tracking, resume."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from medseg.config import apply_overrides, load_config, override_key, validate_config, value_at
from medseg.core import Case, Task
from medseg.data.layouts import detect_cases
from medseg.data.manifest import Manifest, load_manifest
from medseg.errors import ConfigError, DataError, MedsegError, TrackingError
from medseg.inference.model_source import load_model_ref
from medseg.io.atomic import check_writable
from medseg.io.bundle import BUNDLE_FILE, load_checkpoint
from medseg.pipelines import get_task, task_for_manifest
from medseg.runtime import Runtime, current_runtime, resolve_device
from medseg.tracking import TrackingTarget, redact_secrets, resolve_tracking_uri
from medseg.tracking.registry import check_names
from medseg.training.distributed import barrier, init_world, shutdown
from medseg.training.from_model import source_settings
from medseg.training.run import Split, train_task
from medseg.training.spec import ProgressHooks, SilentHooks, TrainResult, check_network_config
from medseg.workflows.scan import scan

ALL_FOLDS = "all"


@dataclass
class TrainRequest:
    """What `medseg train` was asked. `config`: a YAML path or shipped config name (default: the task's);
    `fold`: the validation fold, None for fold 0, or "all" to train on every case (validation then scores
    training cases and is labelled so). `data` is scanned into `manifest` (default: `<out>/manifests/`)."""

    task: str
    config: str | Path | None = None
    overrides: list[str] = field(default_factory=list)
    data: Path | None = None
    manifest: Path | None = None
    fold: int | str | None = None
    device: str = "auto"
    tracking_uri: str | None = None
    tracking: bool = True
    experiment: str | None = None
    run_name: str | None = None
    register: str | None = None
    resume: str | None = None
    out: Path = Path("outputs")
    skip_bad: bool = False  # with `data`: train on the good cases when the scan finds bad ones
    flags: dict[str, str] = field(default_factory=dict)  # overrides made by the command's options -> option as typed


@dataclass
class TrainOutcome:
    result: TrainResult
    run_id: str | None
    experiment_id: str | None
    target: TrackingTarget
    manifest_path: Path
    split: Split
    runtime: Runtime


def _resume_checkpoint(resume: str, uri: str) -> Path:
    """A checkpoint path, or the `last.pt` in the output folder of an MLflow run id."""
    if Path(resume).is_file():
        return Path(resume)
    if resume.endswith(".pt") or "/" in resume:
        raise MedsegError(f"checkpoint not found: {resume}", hint="pass a last.pt path or a run id (medseg runs list)")
    from medseg.tracking.review import run_output_dir

    return Path(run_output_dir(resume, uri)) / "last.pt"


def _continues_in(checkpoint: Path) -> Path | None:
    """The folder a resumed run writes on in: the run folder whose latest state `checkpoint` is (its last.pt,
    beside the config.yaml every run writes; writable). None (a new folder) for a best.pt, whose run may have
    newer epochs in last.pt, a checkpoint copied elsewhere (the current folder) or a read-only folder."""
    folder = checkpoint.parent
    if checkpoint.name == "last.pt" and (folder / "config.yaml").is_file() and os.access(folder, os.W_OK):
        return folder
    return None


def _check_same_options(saved: dict, resumed: dict, flags: dict[str, str]) -> None:
    """A command's own options (`prune --amount`, `distill --alpha`, their defaults too) re-applied to a resumed
    run must leave its settings as they were: another amount failed with a raw size-mismatch traceback, another
    --minutes or --lr silently changed the run."""

    for override, option in flags.items():
        key = override_key(override)
        if value_at(resumed, key) != value_at(saved, key):
            raise ConfigError(
                f"{option} does not match the run being resumed: its {key} is {value_at(saved, key)!r}, this command "
                f"makes it {value_at(resumed, key)!r}",
                hint="resume with the options (and --set) the run was started with",
            )


# What a resumed run cannot change: the network and what it is trained on (its weights or data would not fit).
FIXED_ON_RESUME = (
    "model.",
    "train.patch_size",
    "train.loss",
    "data.manifest",
    "data.spacing",
    "data.intensity",
    "data.crop_foreground",
    "distill.",
    "prune.",
)


def _resume_changes(saved: dict, resumed: dict, overrides: list[str]) -> list[str]:
    """The `--set` values that change a resumed run, as `key old -> new`; refused for what the run is (another
    model was a state-dict traceback after the data was prepared), reported for how it trains (MLflow keeps the
    params the run started with)."""
    changes = []
    final = {override_key(o): o for o in overrides}  # a key set twice: its last --set is the one applied
    for key, override in final.items():
        old, new = value_at(saved, key), value_at(resumed, key)
        if old == new:
            continue
        if key.startswith(FIXED_ON_RESUME):
            raise ConfigError(
                f"--set {override} changes the run being resumed (its {key} is {old!r})",
                hint="resume without it, or start a new run with it (without --resume)",
            )
        changes.append(f"{key} {old!r} -> {new!r}")
    return changes


def _check_resume_point(resume: str, payload: dict, uri: str, epochs: int) -> None:
    """Refuse a resume that would log epochs twice (a checkpoint older than the run's last logged epoch, such as
    best.pt) or only log a finished run's model again."""
    from medseg.tracking.review import get_run, refuse_deleted

    run_id = payload["run_id"]
    try:
        client, run = get_run(uri, run_id)
    except TrackingError:
        raise MedsegError(
            f"{resume} is a checkpoint of run {run_id}, which is not in {redact_secrets(uri)}",
            hint="pass the --tracking-uri it was trained with, or --no-tracking",
        ) from None
    refuse_deleted(run, uri)  # MLflow refused a deleted run only after the data was prepared
    logged = max((m.step for m in client.get_metric_history(run_id, "train_loss")), default=-1)
    if logged > payload["epoch"]:
        first, last = payload["epoch"] + 2, logged + 1  # 1-based epochs it would redo
        again = f"epoch {first}" if first == last else f"epochs {first}-{last}"
        raise MedsegError(
            f"{resume} holds epoch {first - 1} of run {run_id}, which has logged {last} epochs: resuming from it "
            f"would log {again} twice",
            hint=f"resume the run from its latest state: --resume {run_id}",
        )
    if payload["epoch"] + 1 >= epochs and run.info.status == "FINISHED":
        raise MedsegError(
            f"run {run_id} already finished its {epochs} epochs (resuming would only log its model again)",
            hint=f"pass --set train.epochs=N with N > {epochs} to train it further",
        )


def _split(fold: int | str | None, manifest: Manifest) -> Split:
    folds = sorted({c.fold for c in manifest.cases})
    if fold == ALL_FOLDS:
        return Split(None, "fold all: nothing held out, validation scores a fifth of the training cases")
    if fold is None:
        if len(folds) < 2:
            few = len(manifest.cases) < 2
            raise MedsegError(
                "the manifest has a single fold, so no case can be held out for validation",
                hint=("add cases, or " if few else "scan with --folds 5, or ")
                + "pass --fold all to validate on training cases",
            )
        fold = folds[0]
    if int(fold) not in folds:
        raise MedsegError(f"fold {fold} not in the manifest's folds {folds}", hint="pick an existing fold or all")
    return Split(int(fold), f"held-out fold {fold}")


def _task_and_manifest_path(req: TrainRequest) -> tuple[Task, Path]:
    if req.data is None and req.manifest is None:
        raise MedsegError("give --data DIR or --manifest FILE", hint="--data scans a dataset folder")
    if req.data is not None:
        path = req.manifest or req.out / "manifests" / f"{req.data.resolve().name}.json"
        return get_task(req.task, req.data), path
    return task_for_manifest(req.task, load_manifest(req.manifest)), req.manifest


def run_training(req: TrainRequest, hooks: ProgressHooks | None = None) -> TrainOutcome:
    """Train as `req` says; torchrun processes each call this, rank 0 scans, tracks and checkpoints."""
    hooks = hooks or SilentHooks()
    runtime = current_runtime()
    task, manifest_path = _task_and_manifest_path(req)
    check_writable(req.out, folder=True)  # before scanning and caching
    if req.data is not None:
        check_writable(manifest_path)
    cfg = load_config(req.config or task.default_config, req.overrides, req.flags)
    uri = resolve_tracking_uri(req.tracking_uri, cfg.tracking.uri)
    payload = resume_dir = resume_best = None
    if req.resume:
        checkpoint = _resume_checkpoint(req.resume, uri)
        payload, resume_dir = load_checkpoint(checkpoint), _continues_in(checkpoint)
        resume_best = checkpoint.parent / "best.pt" if (checkpoint.parent / "best.pt").is_file() else None
        # A resumed run keeps its own config; explicit overrides still apply (e.g. more epochs).
        raw = apply_overrides(copy.deepcopy(payload["config"]), req.overrides)
        _check_same_options(payload["config"], raw, req.flags)
        changes = _resume_changes(payload["config"], raw, req.overrides)
        cfg = validate_config(raw, req.overrides, req.flags)
        tracked, run_id = req.tracking and cfg.tracking.enabled, payload.get("run_id")
        if tracked and run_id:  # trained untracked: nothing logged to repeat
            _check_resume_point(req.resume, payload, uri, cfg.train.epochs)
        elif payload["epoch"] + 1 >= cfg.train.epochs and (checkpoint.parent / BUNDLE_FILE).is_file():
            raise MedsegError(  # its final bundle is written once post-processing is chosen: the run finished
                f"{req.resume} is the last epoch of a finished run ({cfg.train.epochs} epochs): resuming would only "
                "choose its post-processing again",
                hint=f"pass --set train.epochs=N with N > {cfg.train.epochs} to train it further",
            )
        which = f"run {run_id}" if tracked and run_id else "an untracked run" if tracked else "training (not tracked)"
        new = " (logged as a new MLflow run)" if tracked and not run_id else ""
        hooks.message(f"resuming {which} after epoch {payload['epoch'] + 1}{new}")
        if changes:
            hooks.message(f"changed on resume: {', '.join(changes)} (the run's logged params keep the first values)")
    teacher = load_model_ref(cfg.distill.teacher, uri) if cfg.distill else None
    prune_source = load_model_ref(cfg.prune.source, uri) if cfg.prune else None
    if prune_source is not None:
        cfg = source_settings(cfg, prune_source)
    else:  # a bad model name or keyword fails in a second, not after a scan that reads every voxel
        check_network_config(cfg, task)
    device = resolve_device(req.device, runtime)
    world = init_world(device.type, runtime)
    try:
        if req.data is not None and runtime.is_main:
            _check_labelled(detect_cases(req.data, task.layouts)[1], req.data)  # before reading every voxel
            # folds from `data scan`'s default seed, not train.seed: a seed study keeps its validation cases
            scanned = scan(req.data, req.task, manifest_path, folds=5, seed=0)
            hooks.message(f"manifest of {len(scanned.manifest.cases)} cases -> {manifest_path}")
            for case, err in scanned.bad:
                hooks.message(f"bad case {case.id}: {err}")
            if scanned.bad and not req.skip_bad:  # trained on what was left, exit 0, where `data scan` fails
                good = len(scanned.manifest.cases)
                raise DataError(
                    f"{len(scanned.bad)} of {good + len(scanned.bad)} cases are bad (listed above)",
                    path=str(req.data),
                    hint=f"fix them, or pass --skip-bad to train on the other {good}",
                )
            if scanned.bad:
                hooks.message(f"training without the {len(scanned.bad)} bad case(s) (--skip-bad)")
        barrier(world)  # other ranks read the manifest once rank 0 has written it
        manifest = load_manifest(manifest_path)
        _check_labelled([c.case for c in manifest.cases], manifest_path)
        task = task_for_manifest(req.task, manifest)
        split = _split(req.fold, manifest)
        _check_regions_present(task, manifest, split, manifest_path)
        hooks.message(f"validation: {split.label}")
        # The options win over the config: the logged config names the experiment and model the run really has.
        chosen = {"experiment": req.experiment or cfg.tracking.experiment}
        chosen["register_name"] = req.register or cfg.tracking.register_name
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update=chosen)})
        if cfg.tracking.register_name:
            check_names(cfg.tracking.register_name, [])  # before the training, not after it
        target = TrackingTarget(
            uri if req.tracking and cfg.tracking.enabled else None,
            cfg.tracking.experiment,
            req.run_name,
            cfg.tracking.register_name,
            cfg.tracking.system_metrics,
        )
        result, tracker = train_task(
            task,
            manifest,
            manifest_path,
            cfg,
            split=split,
            device=device,
            world=world,
            target=target,
            out_root=req.out,
            resume=payload,
            resume_dir=resume_dir,
            resume_best=resume_best,
            hooks=hooks,
            teacher=teacher,
            prune_source=prune_source,
        )
    finally:
        shutdown(world)
    return TrainOutcome(
        result, tracker.run_id, getattr(tracker, "experiment_id", None), target, manifest_path, split, runtime
    )


def _check_regions_present(task: Task, manifest: Manifest, split: Split, path: Path) -> None:
    """A region no training case holds cannot be learned, and it scores Dice 1 (both empty) in every validation
    case: a label declared in dataset.json but in no file lifted the mean that picks the best epoch (0.009 read
    as 0.339)."""
    train_cases, _ = manifest.split(split.fold)
    absent = manifest.absent_regions(task.scheme.regions, {c.id for c in train_cases})
    if absent:
        coded = ", ".join(f"{c} = {manifest.label_map.get(c)}" for r in absent for c in task.scheme.regions[r])
        raise DataError(
            f"no training case holds region {', '.join(absent)} ({coded}): it cannot be learned, and would score "
            "Dice 1 in every validation case",
            path=str(path),
            hint="add cases that hold it, or remove it from dataset.json's labels",
        )


def _check_labelled(cases: list[Case], path: Path) -> None:
    """Every case trains or validates, so every case needs its label file: refused before any work (a case
    without one failed inside MONAI's data loader, or after a whole epoch when it was in the validation fold)."""
    unlabelled = [c.id for c in cases if not c.label]
    if unlabelled:
        names = ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else "")
        raise DataError(
            f"{len(unlabelled)} case(s) have no label file: {names}",
            path=str(path),
            hint="add their label files (e.g. <id>_seg.nii.gz) or move those cases out of the training folder",
        )
