"""A training run from resolved inputs: seeds, cache, tracking set-up, `fit`, post-processing, model logging."""

from __future__ import annotations

import itertools
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import monai
import numpy as np
import torch

from medseg import __version__
from medseg.config import ExperimentConfig, config_to_yaml, flatten, redacted_dump
from medseg.core import Task
from medseg.data.cache import read_entry
from medseg.data.manifest import Manifest
from medseg.data.planning import plan_preprocessing
from medseg.errors import ConfigError
from medseg.inference.model_source import ModelRef
from medseg.io.atomic import atomic_path, atomic_write_text, check_writable
from medseg.io.bundle import BUNDLE_FILE, load_checkpoint, save_checkpoint
from medseg.io.tables import rows_to_csv
from medseg.nets import model_info
from medseg.nets.profile import count_parameters
from medseg.runtime import Runtime
from medseg.tracking import NullTracker, Tracker, TrackingTarget
from medseg.tracking.review import MODEL_METRIC_TAG
from medseg.training.data import prepare_cache
from medseg.training.distill import attach_teacher_logits
from medseg.training.distributed import barrier
from medseg.training.from_model import check_compatible, link_tags, pruned_start
from medseg.training.loop import fit
from medseg.training.postprocess_choice import choose_postprocess, predict_validation
from medseg.training.spec import ProgressHooks, SilentHooks, TrainResult, TrainSpec
from medseg.training.validate import mean_val_dice
from medseg.transforms.preprocess import PreprocessPlan
from medseg.viz.curves import learning_curves
from medseg.viz.overlays import save_png


@dataclass(frozen=True)
class Split:
    """Which manifest cases train and which validate; `label` says what the validation is, for logs and MLflow."""

    fold: int | None
    label: str


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _seed(cfg: ExperimentConfig, world: Runtime) -> None:
    monai.utils.set_determinism(seed=cfg.train.seed + world.rank)
    if cfg.train.deterministic:
        # Bitwise determinism is opt-in; CUDA has no deterministic 3D upsampling backward, so warn only.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        monai.utils.set_determinism(seed=cfg.train.seed + world.rank, use_deterministic_algorithms=False)


def _params(cfg: ExperimentConfig, manifest: Manifest, split: Split, plan: PreprocessPlan, n_params: int) -> dict:
    return {
        **flatten(redacted_dump(cfg)),
        "plan.spacing": "native" if plan.spacing is None else " x ".join(f"{v:g}" for v in plan.spacing),
        "model_name": cfg.model.name,
        "param_count": n_params,
        "manifest_hash": manifest.digest(),
        "fold": "all" if split.fold is None else split.fold,
        "validation": split.label,
        "seed": cfg.train.seed,
        "version.medseg": __version__,
        "version.torch": torch.__version__,
        "version.monai": monai.__version__,
        "version.cuda": torch.version.cuda or "none",
        "git_commit": _git_commit(),
    }


def run_name(target: TrackingTarget, cfg: ExperimentConfig, kind: str) -> str:
    """The user's run name, else model, kind (train, distill, prune), start time and a random tag. MLflow's own
    names draw from Python's RNG, which training seeds first: every run of a seed was called the same."""
    if target.run_name:
        return target.run_name
    return f"{cfg.model.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _open_tracker(
    target: TrackingTarget, cfg: ExperimentConfig, task: Task, resume_run: str | None, world: Runtime, kind: str
):
    if target.uri is None or not world.is_main:
        return NullTracker()
    from medseg.tracking.run_writer import MlflowTracker

    info = model_info(cfg.model.name)
    tags = {
        "task": task.name,
        "model_family": info.family,
        "cross_modal": str(cfg.model.kwargs.get("cross_modal", info.cross_modal)),
    }
    name = run_name(target, cfg, kind)
    return MlflowTracker(target.uri, target.experiment, name, resume_run, tags, target.system_metrics)


def train_task(
    task: Task,
    manifest: Manifest,
    manifest_path: Path,
    cfg: ExperimentConfig,
    *,
    split: Split,
    device: torch.device,
    world: Runtime,
    target: TrackingTarget,
    out_root: Path,
    resume: dict | None = None,
    resume_dir: Path | None = None,
    resume_best: Path | None = None,
    hooks: ProgressHooks | None = None,
    teacher: ModelRef | None = None,
    prune_source: ModelRef | None = None,
) -> tuple[TrainResult, Tracker]:
    """Train on `manifest` as `split` says, tracked in MLflow; returns the result and the (ended) tracker.
    A resumed run writes on in `resume_dir` (its run folder, when resumed from its last.pt) if it continues the
    same run (untracked, or the same MLflow run); otherwise (a tracked checkpoint resumed untracked, or the reverse,
    or from a best.pt) it gets a new folder holding a copy of `resume_best`, the best.pt beside the checkpoint, so
    no run's checkpoints are overwritten. Without one, its next validation is the best.
    With a `teacher` (distillation), its logits over every training case are cached first and ride with the labels;
    with a `prune_source`, training fine-tunes that network with `cfg.prune.amount` of its channels removed."""
    hooks = hooks or SilentHooks()
    _seed(cfg, world)
    data = {"manifest": manifest.split_digest(), "fold": split.fold}
    if resume and resume.get("data", data) != data:
        was, now = resume["data"], data
        raise ConfigError(
            f"this run trained on case set {was['manifest']} with {_fold_words(was['fold'])}, not {now['manifest']} "
            f"with {_fold_words(now['fold'])}: resuming would mix its validation cases into training",
            hint="resume with the same --data/--manifest and --fold, or start a new run",
        )
    if resume and resume_best is None:
        resume = {**resume, "best": -1.0}  # a lone last.pt: the best weights are not at hand
    train_cases, val_cases = manifest.split(split.fold)
    cache_dir = Path(cfg.data.cache_dir)
    check_writable(cache_dir, folder=True)  # under a file: "not a directory" was reported as a full disk
    plan = plan_preprocessing(cfg.data, train_cases, task.channels, manifest.intensity_stats)
    # The models a run starts from are checked before any case is cached: a refusal costs seconds, not the cache.
    if teacher is not None:
        check_compatible(teacher, task, plan, train_cases, "teacher")
    start, structure = None, {}
    if prune_source is not None:
        check_compatible(prune_source, task, plan, train_cases, "pruning source")
        start, structure = pruned_start(prune_source, cfg.prune.amount)
    if world.is_main:
        cases = len({c.id for c in [*train_cases, *val_cases]})  # with fold all, validation cases also train
        hooks.message(f"preparing {cases} cases (decoded once, then cached)")
        if plan.spacing:
            hooks.message("voxel spacing for the network: " + " x ".join(f"{v:g}" for v in plan.spacing) + " mm")
        prepare_cache([*train_cases, *val_cases], task.scheme, cache_dir, plan)
    barrier(world)
    train_items = prepare_cache(train_cases, task.scheme, cache_dir, plan)
    val_items = prepare_cache(val_cases, task.scheme, cache_dir, plan)
    stats = np.mean([read_entry(Path(i["entry"])).stats for i in train_items], axis=0).tolist()
    tags = {}
    if teacher is not None:
        train_items = _teacher_items(teacher, train_items, device, world, hooks)
        tags |= link_tags(teacher, "teacher")
    if prune_source is not None:
        before = sum(t.numel() for t in prune_source.bundle.state_dict.values() if t.is_floating_point())
        after = count_parameters(start)
        hooks.message(
            f"pruned {prune_source.ref}: {before / 1e6:.2f} M -> {after / 1e6:.2f} M parameters "
            f"({1 - after / before:.0%} fewer)"
        )
        tags |= link_tags(prune_source, "pruned_from")

    kind = "distill" if teacher is not None else "prune" if prune_source is not None else "train"
    tracker = _open_tracker(target, cfg, task, resume.get("run_id") if resume else None, world, kind)
    status = "FAILED"
    try:
        same_run = resume is not None and resume_dir is not None and resume.get("run_id") == tracker.run_id
        # untracked: time plus a random tag, as two runs started in one second shared (and overwrote) one folder
        untracked = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        out_dir = resume_dir if same_run else out_root / (tracker.run_id or untracked)
        if world.is_main:  # other ranks have no run id and write nothing
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "config.yaml", config_to_yaml(cfg))
            if resume_best is not None and not same_run:
                with atomic_path(out_dir / "best.pt") as tmp:  # the best so far, unless a later epoch beats it
                    shutil.copyfile(resume_best, tmp)
        tracker.set_tags({"medseg.out_dir": str(out_dir.resolve()), **tags})
        if world.is_main:
            hooks.run_started(tracker.run_id, out_dir)
        spec = TrainSpec(
            cfg,
            task,
            manifest.label_map,
            train_items,
            val_items,
            stats,
            out_dir,
            device,
            world,
            resume,
            plan,
            start,
            structure,
            data,
        )
        model = spec.build_network()
        if world.is_main and not resume:
            tracker.log_params(_params(cfg, manifest, split, plan, count_parameters(model)))
            tracker.log_text(config_to_yaml(cfg), "config.yaml")
            tracker.log_artifact(manifest_path, "data")
            tracker.log_dataset(manifest.to_json(), str(manifest_path), manifest_path.stem, manifest.digest())
        source_dice = _source_dice(prune_source, spec, tracker, hooks) if prune_source is not None else None
        result = fit(spec, model, tracker, hooks)
        result.source_dice = source_dice
        if world.is_main:
            _finish(result, tracker, target, out_dir, spec, hooks)
        status = "FINISHED"
        return result, tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


def _fold_words(fold: int | None) -> str:
    """A split's fold as the CLI names it (None: `--fold all`, nothing held out)."""
    return "fold all" if fold is None else f"fold {fold}"


def _source_dice(source: ModelRef, spec: TrainSpec, tracker: Tracker, hooks) -> float | None:
    """The unpruned source's mean Dice on this run's validation cases (logged as `source_val_dice_mean`): the
    figure the pruned model must come back to, or the user learns that --amount cost accuracy."""
    if not spec.val_items:
        return None
    hooks.message(f"validating {source.ref} unpruned on {len(spec.val_items)} case(s), the pruned model's reference")
    dice = mean_val_dice(source.bundle.build_model(), spec)
    if dice is not None and spec.world.is_main and not spec.resume:  # logged once per run
        tracker.log_metrics({"source_val_dice_mean": dice}, step=0)
    return dice


def _teacher_items(teacher: ModelRef, items: list[dict], device, world: Runtime, hooks) -> list[dict]:
    """Cache the teacher's logits over the training cases (rank 0 computes)."""
    n, done = len(items), itertools.count(1)

    def report(case_id: str, hit: bool) -> None:
        k = next(done)
        if not hit:
            hooks.message(f"teacher logits: {case_id} ({k}/{n})")

    if world.is_main:
        hooks.message(f"teacher {teacher.ref}: logits over {n} training cases (cached after the first run)")
        attached = attach_teacher_logits(items, teacher.bundle, device, report)
    barrier(world)
    # other ranks only find what rank 0 wrote (no second hash of the teacher's weights on rank 0)
    return attached if world.is_main else attach_teacher_logits(items, teacher.bundle, device)


def _finish(
    result: TrainResult, tracker: Tracker, target: TrackingTarget, out_dir: Path, spec: TrainSpec, hooks
) -> None:
    """Learning curves, the post-processing choice, the best model as a self-describing bundle, the MLflow model
    and registry aliases."""
    rgb = learning_curves(result.history, title=f"{spec.cfg.model.name}  best val Dice {result.best_dice:.3f}")
    save_png(rgb, out_dir / "learning_curves.png")
    tracker.log_artifact(out_dir / "learning_curves.png", "plots")
    tracker.log_text(config_to_yaml(spec.cfg), "config_resolved.yaml")
    # The best checkpoint is rewritten with the chosen post-processing, so `predict --model best.pt` applies it.
    payload = load_checkpoint(result.best_path)
    bundle = result.best_bundle
    if bundle is None:  # a resumed run whose best epoch came before the interruption
        from medseg.io.bundle import ModelBundle

        bundle = ModelBundle.from_dict(payload["bundle"])
    model = bundle.build_model().to(spec.device)
    hooks.message(f"choosing post-processing on {len(spec.val_items)} validation case(s)")
    cases = result.best_val_cases
    if cases is None:  # not kept during training (DDP, many cases, resumed past the best epoch): predict again
        cfg = spec.cfg
        cases = predict_validation(
            model,
            spec.val_items,
            cfg.train.patch_size,
            bundle.infer,
            spec.device,
            cfg.train.amp,
            bundle.scheme.exclusive,
        )
    choice = choose_postprocess(cases, spec.task.scheme, bundle.infer)
    result.postprocess = choice.rules
    bundle.infer = bundle.infer.override(postprocess=choice.rules)
    result.best_bundle = bundle
    save_checkpoint({**payload, "bundle": bundle.to_dict()}, result.best_path)
    bundle_path = out_dir / BUNDLE_FILE  # also the file medseg reads back from the MLflow model
    save_checkpoint({"bundle": bundle.to_dict()}, bundle_path)
    chosen = {f"postprocess.{region}": rule.describe() for region, rule in choice.rules.items()}
    tracker.log_params(chosen)  # MLflow keeps a param's first value: a resumed run's new choice is in the tags
    tracker.set_tags({f"medseg.{key}": rule for key, rule in chosen.items()})
    if choice.metrics:
        tracker.log_metrics(choice.metrics, step=result.epochs_run - 1)
    if choice.table:
        tracker.log_text(rows_to_csv(choice.table), "postprocess/search.csv")
    if tracker.run_id is None:
        return
    model = model.cpu()
    s = max(model.stride, model.min_size, 16) if model.fixed_size is None else model.fixed_size[0]
    example = np.zeros((1, len(spec.task.channels), s, s, s), np.float32)
    result.model_uri = tracker.log_bundle_model(model, bundle_path, example)
    tracker.set_tags({MODEL_METRIC_TAG: f"{result.best_dice:.6f}"})  # what `models register` compares
    if target.register_name and result.model_uri:
        result.aliases = tracker.register(result.model_uri, target.register_name, result.best_dice)
