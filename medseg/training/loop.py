"""The epoch loop: train on random patches, validate on whole volumes, checkpoint, track.

UI-free: progress is reported through `ProgressHooks`, tracking through a `Tracker`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from medseg.config import redacted_dump
from medseg.io.bundle import ModelBundle
from medseg.nets import SegmentationModel
from medseg.tracking import Tracker
from medseg.training.checkpoint import save_training_checkpoint, set_rng_state
from medseg.training.data import train_loader
from medseg.training.distributed import barrier, mean_across
from medseg.training.optim import build_loss, build_optimizer, warmup_cosine
from medseg.training.spec import ProgressHooks, SilentHooks, TrainResult, TrainSpec
from medseg.training.steps import grad_scaler, seed_epoch, train_epoch
from medseg.training.validate import validate_epoch


@dataclass
class _Progress:
    """Where the loop stands: the next epoch, the best validation so far and the history."""

    start: int = 0
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict] | None = None


def _restore(spec: TrainSpec, model, optimizer, scheduler, scaler) -> _Progress:
    """Load a resumed run's model, optimiser, scheduler, scaler and RNG states; where to continue."""
    r = spec.resume
    if not r:
        return _Progress(history=[])
    model.load_state_dict(r["bundle"]["state_dict"])
    optimizer.load_state_dict(r["optimizer"])
    scheduler.load_state_dict(r["scheduler"])
    if scaler is not None and r["scaler"]:
        scaler.load_state_dict(r["scaler"])
    set_rng_state(r["rng"])
    history = list(r["history"])
    best_epoch = max((h["epoch"] for h in history if h.get("val_dice_mean") == r["best"]), default=-1)
    return _Progress(r["epoch"] + 1, r["best"], best_epoch, history)


def _epoch_metrics(loss: float, samples: int, elapsed: float, optimizer, spec: TrainSpec) -> dict[str, float]:
    metrics = mean_across({"train_loss": loss, "train_samples_per_s": samples / max(elapsed, 1e-9)}, spec.world)
    metrics["train_samples_per_s"] *= spec.world.size
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
    scheduler = warmup_cosine(optimizer, cfg.train.warmup_epochs, cfg.train.epochs)
    scaler = grad_scaler(spec)
    state = _restore(spec, model, optimizer, scheduler, scaler)
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids) if world.size > 1 else model
    t = cfg.train
    loader = train_loader(
        spec.train_items,
        t.patch_size,
        t.batch_size,
        t.samples_per_volume,
        t.pos_neg_ratio,
        cfg.data.num_workers,
        t.seed,
        (world.rank, world.size),
    )
    loss_fn = build_loss(t.loss, getattr(model, "deep_supervision", False))
    last_path, best_path = spec.out_dir / "last.pt", spec.out_dir / "best.pt"
    best_bundle: ModelBundle | None = None
    t_start, stale, epoch = time.monotonic(), 0, state.start - 1
    for epoch in range(state.start, t.epochs):
        seed_epoch(loader, t.seed, epoch, world.rank)
        hooks.epoch_start(epoch, t.epochs, len(loader))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.monotonic()
        net.train()
        loss, samples = train_epoch(net, loader, loss_fn, optimizer, scaler, spec, hooks)
        scheduler.step()
        metrics = _epoch_metrics(loss, samples, time.monotonic() - t0, optimizer, spec)
        out_of_time = t.max_minutes is not None and (time.monotonic() - t_start) / 60 >= t.max_minutes
        if (epoch + 1) % t.val_every == 0 or epoch == t.epochs - 1 or out_of_time:
            val = validate_epoch(model, spec, tracker, epoch)
            metrics.update(val)
            if val and val["val_dice_mean"] > state.best:
                state.best, state.best_epoch, stale = val["val_dice_mean"], epoch, 0
            else:
                stale += 1
        state.history.append({"epoch": epoch, **metrics})
        if world.is_main:
            bundle = spec.bundle(model)
            extra = dict(epoch=epoch, best=state.best, history=state.history, config=redacted_dump(cfg))
            extra |= dict(optimizer=optimizer, scheduler=scheduler, scaler=scaler, run_id=tracker.run_id)
            save_training_checkpoint(last_path, bundle, **extra)
            if state.best_epoch == epoch:
                save_training_checkpoint(best_path, bundle, **extra)
                best_bundle = bundle
            # Logged only once checkpointed: an epoch that a kill makes `--resume` redo is not logged twice.
            tracker.log_metrics(metrics, step=epoch)
        hooks.epoch_end(epoch, metrics)
        barrier(world)
        if out_of_time or (t.early_stop_patience is not None and stale >= t.early_stop_patience):
            hooks.message(
                "time budget reached" if out_of_time else f"early stop: no improvement in {stale} validations"
            )
            break
    return TrainResult(
        state.best, state.best_epoch, epoch + 1, state.history, best_path, last_path, best_bundle=best_bundle
    )
