"""The epoch loop: train on random patches, validate on whole volumes, checkpoint, track.

UI-free: progress is reported through `ProgressHooks`, tracking through a `Tracker`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel

from medseg.config import redacted_dump
from medseg.errors import MedsegError
from medseg.io.bundle import ModelBundle
from medseg.nets import SegmentationModel
from medseg.runtime import Runtime
from medseg.tracking import Tracker
from medseg.training.checkpoint import save_training_checkpoint, set_rng_state
from medseg.training.data import train_loader
from medseg.training.distill import DistillationLoss
from medseg.training.distributed import any_across, barrier, mean_across
from medseg.training.optim import build_loss, build_optimizer, lr_factor, run_progress
from medseg.training.spec import ProgressHooks, SilentHooks, TrainResult, TrainSpec
from medseg.training.steps import grad_scaler, seed_epoch, train_epoch
from medseg.training.validate import validate_epoch


@dataclass
class _Progress:
    """Where the loop stands: the next epoch, the best validation so far, the history, the seconds spent (training
    and validation, across resumes: what the time budget counts) and the last validation's duration."""

    start: int = 0
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    val_s: float = 0.0


def _restore(spec: TrainSpec, model, optimizer, scaler) -> _Progress:
    """Load a resumed run's model, optimiser, scaler and RNG states; where to continue."""
    r = spec.resume
    if not r:
        return _Progress()
    model.load_state_dict(r["bundle"]["state_dict"])
    optimizer.load_state_dict(r["optimizer"])
    if scaler is not None and r["scaler"]:
        scaler.load_state_dict(r["scaler"])
    set_rng_state(r["rng"])
    history = list(r["history"])
    best_epoch = max((h["epoch"] for h in history if h.get("val_dice_mean") == r["best"]), default=-1)
    elapsed = history[-1].get("elapsed_s", 0.0) if history else 0.0
    return _Progress(r["epoch"] + 1, r["best"], best_epoch, history, elapsed)


def check_not_diverged(model: torch.nn.Module, epoch: int, loss: float, lr: float) -> None:
    """Stop a run whose weights became NaN or Inf (a learning rate far too high, a loss that overflowed): every
    later epoch would be NaN too, validated as Dice 0, and the run would finish as a success. Checked on the
    weights, not the loss: with fp16 a GradScaler skips a step whose loss overflowed and the weights stay fine."""
    if all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return
    kept = "; the checkpoints of the epochs before are kept" if epoch > 0 else ""
    raise MedsegError(
        f"training diverged in epoch {epoch + 1}: the weights became NaN or Inf (train loss {loss:.3g})",
        hint=f"lower train.lr (now {lr:g}) or train.grad_clip{kept}",
    )


def _no_room(elapsed_s: float, train_s: float, val_s: float, budget_s: float | None, world: Runtime) -> bool:
    """Whether another epoch and its closing validation (`train_s`, `val_s`: the last ones) overrun the budget once
    `elapsed_s` have passed; every rank gets the same answer."""
    return any_across(budget_s is not None and elapsed_s + train_s + val_s > budget_s, world)


def _epoch_metrics(loss: float, samples: int, elapsed: float, optimizer, spec: TrainSpec) -> dict[str, float]:
    metrics = mean_across({"train_loss": loss, "train_samples_per_s": samples / max(elapsed, 1e-9)}, spec.world)
    metrics["train_samples_per_s"] *= spec.world.world_size
    metrics.update(lr=optimizer.param_groups[0]["lr"], epoch_time_s=elapsed)
    if spec.device.type == "cuda":
        metrics["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(spec.device) / 1e9
    return metrics


def fit(spec: TrainSpec, model: SegmentationModel, tracker: Tracker, hooks: ProgressHooks | None = None) -> TrainResult:
    """Run (or resume) training of `model`; rank 0 checkpoints and tracks the gathered metrics."""
    hooks = hooks or SilentHooks()
    cfg, world, device = spec.cfg, spec.world, spec.device
    model = model.to(device)
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scaler = grad_scaler(spec)
    state = _restore(spec, model, optimizer, scaler)
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids) if world.distributed else model
    t = cfg.train
    loader = train_loader(
        spec.train_items,
        t.patch_size,
        t.batch_size,
        t.samples_per_volume,
        t.pos_neg_ratio,
        cfg.data.num_workers,
        t.seed,
        (world.rank, world.world_size),
    )
    exclusive = spec.task.scheme.exclusive
    loss_fn = build_loss(t.loss, getattr(model, "deep_supervision", False), exclusive)
    if cfg.distill is not None:
        loss_fn = DistillationLoss(loss_fn, cfg.distill.temperature, cfg.distill.alpha, exclusive)
    last_path, best_path = spec.out_dir / "last.pt", spec.out_dir / "best.pt"
    best_bundle: ModelBundle | None = None
    best_val_cases = None
    budget_s = 60 * t.max_minutes if t.max_minutes is not None else None
    stale, epoch = 0, state.start - 1
    for epoch in range(state.start, t.epochs):
        seed_epoch(loader, t.seed, epoch, world.rank)
        progress = run_progress(epoch, t.epochs, t.warmup_epochs, state.elapsed_s, t.max_minutes)
        for group in optimizer.param_groups:
            group["lr"] = t.lr * lr_factor(epoch, t.warmup_epochs, progress)
        hooks.epoch_start(epoch, t.epochs, len(loader))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.monotonic()
        net.train()
        loss, samples = train_epoch(net, loader, loss_fn, optimizer, scaler, spec, hooks)
        check_not_diverged(model, epoch, loss, t.lr)
        train_s = time.monotonic() - t0
        metrics = _epoch_metrics(loss, samples, train_s, optimizer, spec)

        # The last epoch within budget: no room after this one, its scheduled validation included.
        scheduled = (epoch + 1) % t.val_every == 0 or epoch == t.epochs - 1
        after_this = state.elapsed_s + train_s + (state.val_s if scheduled else 0.0)
        out_of_time = _no_room(after_this, train_s, state.val_s, budget_s, world)
        validating = scheduled or out_of_time
        if validating:
            t1 = time.monotonic()
            val, val_cases = validate_epoch(model, spec, tracker, epoch)
            state.val_s = time.monotonic() - t1
            metrics.update(val)
            if val and val["val_dice_mean"] > state.best:
                state.best, state.best_epoch, stale = val["val_dice_mean"], epoch, 0
                best_val_cases = val_cases
            else:
                stale += 1
        state.elapsed_s += time.monotonic() - t0
        metrics["elapsed_s"] = state.elapsed_s
        # A validation longer than foreseen (the first one's cost is unknown) can leave no room for another epoch:
        # stop now, this epoch validated, rather than train and validate once more past the budget.
        if validating and not out_of_time:
            out_of_time = _no_room(state.elapsed_s, train_s, state.val_s, budget_s, world)
        state.history.append({"epoch": epoch, **metrics})
        if world.is_main:
            bundle = spec.bundle(model)
            extra = dict(epoch=epoch, best=state.best, history=state.history, config=redacted_dump(cfg))
            extra |= dict(optimizer=optimizer, scaler=scaler, run_id=tracker.run_id, data=spec.data)
            save_training_checkpoint(last_path, bundle, **extra)
            if state.best_epoch == epoch:
                save_training_checkpoint(best_path, bundle, **extra)
                best_bundle = bundle
            # Logged only once checkpointed: an epoch that a kill makes `--resume` redo is not logged twice.
            tracker.log_metrics(metrics, step=epoch)
        hooks.epoch_end(epoch, metrics)
        barrier(world)
        if out_of_time or (t.early_stop_patience is not None and stale >= t.early_stop_patience):
            why = "time budget reached" if out_of_time else f"early stop: no improvement in {stale} validations"
            hooks.message(why)
            break
    return TrainResult(
        state.best,
        state.best_epoch,
        epoch + 1,
        state.history,
        best_path,
        last_path,
        best_bundle=best_bundle,
        best_val_cases=best_val_cases if best_bundle is not None else None,
    )
