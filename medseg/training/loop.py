"""The epoch loop: train on random patches, validate on whole volumes, checkpoint, track.

UI-free: progress is reported through `ProgressHooks`, tracking through a `Tracker`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from monai.data.utils import set_rnd
from torch.nn.parallel import DistributedDataParallel

from medseg.config import ExperimentConfig, RegionRule
from medseg.core import LabelScheme
from medseg.errors import ConfigError
from medseg.inference.sliding import autocast
from medseg.io.bundle import ModelBundle
from medseg.io.tables import rows_to_csv
from medseg.nets import SegmentationModel, create_model
from medseg.tracking import Tracker
from medseg.training.checkpoint import save_training_checkpoint, set_rng_state
from medseg.training.data import train_loader
from medseg.training.distributed import World, barrier, mean_across
from medseg.training.optim import build_loss, build_optimizer, warmup_cosine
from medseg.training.validate import validate
from medseg.viz.overlays import save_png


class ProgressHooks(Protocol):
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentHooks:
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class TrainSpec:
    """Everything a training run needs, already validated and resolved by the caller."""

    cfg: ExperimentConfig
    task: str
    channels: list[str]
    scheme: LabelScheme
    label_map: dict[str, int]
    train_items: list[dict]
    val_items: list[dict]
    norm_stats: list[list[float]]
    out_dir: Path
    device: torch.device
    world: World = field(default_factory=World)
    resume: dict | None = None


@dataclass
class TrainResult:
    best_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict]
    best_path: Path
    last_path: Path
    model_uri: str | None = None
    aliases: list[str] = field(default_factory=list)
    postprocess: dict[str, RegionRule] = field(default_factory=dict)


def build_network(spec: TrainSpec) -> SegmentationModel:
    cfg = spec.cfg
    kwargs = {"in_channels": len(spec.channels), "out_channels": len(spec.scheme.regions), **cfg.model.kwargs}
    try:
        model = create_model(cfg.model.name, **kwargs)
        model.check_input_shape(torch.zeros(1, len(spec.channels), *cfg.train.patch_size, device="meta"))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"model '{cfg.model.name}': {exc}", hint="check model.name, model.kwargs and train.patch_size"
        ) from None
    return model


def _bundle(spec: TrainSpec, model: SegmentationModel) -> ModelBundle:
    cfg = spec.cfg
    return ModelBundle(
        model_name=cfg.model.name,
        model_kwargs={
            "in_channels": len(spec.channels),
            "out_channels": len(spec.scheme.regions),
            **cfg.model.kwargs,
        },
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        task=spec.task,
        channels=spec.channels,
        scheme=spec.scheme,
        label_map=spec.label_map,
        patch_size=list(cfg.train.patch_size),
        norm_stats=spec.norm_stats,
        crop_foreground=cfg.data.crop_foreground,
        infer=cfg.infer,
    )


def optimizer_steps(batch: dict, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Split a loader batch into optimizer steps of `batch_size` patches.

    The loader yields `batch_size` volumes x `samples_per_volume` patches (MONAI flattens the crops), so
    without this a step would hold batch_size x samples_per_volume patches: 8 instead of 2 at 128^3 with
    4 samples, which does not fit the GPU memory `batch_size` promises. Patches are shuffled first so a step
    mixes volumes.
    """
    order = torch.randperm(batch["image"].shape[0])
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield batch["image"][idx], batch["label"][idx]


def _train_epoch(model, loader, loss_fn, optimizer, scaler, spec: TrainSpec, hooks: ProgressHooks) -> tuple[float, int]:
    device, cfg = spec.device, spec.cfg.train
    losses, samples = [], 0
    for x, y in (step for batch in loader for step in optimizer_steps(batch, cfg.batch_size)):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp) if scaler is None else torch.autocast("cuda", dtype=torch.float16):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        losses.append(float(loss.detach()))
        samples += x.shape[0]
        hooks.step(losses[-1])
    return float(np.mean(losses)) if losses else float("nan"), samples


def _seed_epoch(loader, seed: int, epoch: int, rank: int) -> None:
    """Seed every RNG from (seed, epoch, rank) so an epoch's patches and dropout do not depend on history:
    a resumed run continues bit-for-bit (on CPU) where an uninterrupted one would be."""
    s = seed + 10007 * epoch + 101 * rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    set_rnd(loader.dataset, s)  # transforms in the main process; workers are re-seeded from torch per epoch
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def _scaler(spec: TrainSpec) -> torch.amp.GradScaler | None:
    # bf16 needs no scaler; fp16 (GPUs without bf16) does.
    cuda = spec.device.type == "cuda"
    if cuda and spec.cfg.train.amp and not torch.cuda.is_bf16_supported():
        return torch.amp.GradScaler("cuda")
    return None


def _validate_epoch(model, spec: TrainSpec, tracker: Tracker, epoch: int) -> dict[str, float]:
    """Whole-volume validation, each rank on its share of cases; returns `val_dice_*` averaged over all cases.
    Rank 0 logs the per-case CSV and overlay pictures."""
    cfg, world = spec.cfg, spec.world
    rows, pictures = validate(
        model,
        spec.val_items[world.rank :: world.size],
        spec.scheme,
        spec.channels,
        cfg.train.patch_size,
        cfg.infer,
        spec.device,
        cfg.train.amp,
        overlays=cfg.train.overlays if world.is_main else 0,
    )
    # The same keys on every rank (even one without cases), or the all-reduce would mismatch.
    keys = [f"dice_{r.lower()}" for r in spec.scheme.region_names] + ["dice_mean"]
    sums = {k: float(sum(r[k] for r in rows)) for k in keys} | {"n": float(len(rows))}
    total = mean_across(sums, world)
    if world.is_main:
        tracker.log_text(rows_to_csv(rows), f"validation/epoch_{epoch:04d}.csv")
        for cid, rgb in pictures.items():
            tracker.log_image(rgb, key=f"overlay_{cid}", step=epoch)
            save_png(rgb, spec.out_dir / "overlays" / f"{cid}_epoch{epoch:04d}.png")
    return {f"val_{k}": total[k] / total["n"] for k in keys} if total["n"] else {}


def fit(spec: TrainSpec, tracker: Tracker, hooks: ProgressHooks | None = None) -> TrainResult:
    """Run (or resume) training; rank 0 validates the gathered metrics, checkpoints and tracks."""
    hooks = hooks or SilentHooks()
    cfg, world, device = spec.cfg, spec.world, spec.device
    model = build_network(spec).to(device)
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scheduler = warmup_cosine(optimizer, cfg.train.warmup_epochs, cfg.train.epochs)
    scaler = _scaler(spec)
    start, best, best_epoch, history = 0, -1.0, -1, []
    if spec.resume:
        model.load_state_dict(spec.resume["bundle"]["state_dict"])
        optimizer.load_state_dict(spec.resume["optimizer"])
        scheduler.load_state_dict(spec.resume["scheduler"])
        if scaler is not None and spec.resume["scaler"]:
            scaler.load_state_dict(spec.resume["scaler"])
        start, best, history = spec.resume["epoch"] + 1, spec.resume["best"], list(spec.resume["history"])
        best_epoch = max((h["epoch"] for h in history if h.get("val_dice_mean") == best), default=-1)
        set_rng_state(spec.resume["rng"])
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if world.size > 1
        else model
    )
    loader = train_loader(
        spec.train_items,
        cfg.train.patch_size,
        cfg.train.batch_size,
        cfg.train.samples_per_volume,
        cfg.train.pos_neg_ratio,
        cfg.data.num_workers,
        cfg.train.seed,
        (world.rank, world.size),
    )
    loss_fn = build_loss(cfg.train.loss, getattr(model, "deep_supervision", False))
    last_path, best_path = spec.out_dir / "last.pt", spec.out_dir / "best.pt"
    t_start, stale = time.monotonic(), 0
    epoch = start - 1
    for epoch in range(start, cfg.train.epochs):
        _seed_epoch(loader, cfg.train.seed, epoch, world.rank)
        hooks.epoch_start(epoch, cfg.train.epochs, len(loader))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.monotonic()
        net.train()
        train_loss, samples = _train_epoch(net, loader, loss_fn, optimizer, scaler, spec, hooks)
        scheduler.step()
        elapsed = time.monotonic() - t0
        metrics = mean_across({"train_loss": train_loss, "train_samples_per_s": samples / max(elapsed, 1e-9)}, world)
        metrics["train_samples_per_s"] *= world.size
        metrics.update(lr=optimizer.param_groups[0]["lr"], epoch_time_s=elapsed)
        if device.type == "cuda":
            metrics["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        out_of_time = cfg.train.max_minutes is not None and (time.monotonic() - t_start) / 60 >= cfg.train.max_minutes
        last_epoch = epoch == cfg.train.epochs - 1 or out_of_time
        if (epoch + 1) % cfg.train.val_every == 0 or last_epoch:
            val = _validate_epoch(model, spec, tracker, epoch)
            metrics.update(val)
            if val and val["val_dice_mean"] > best:
                best, best_epoch, stale = val["val_dice_mean"], epoch, 0
            else:
                stale += 1
        history.append({"epoch": epoch, **metrics})
        if world.is_main:
            state = dict(
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                epoch=epoch,
                best=best,
                history=history,
                config=cfg.model_dump(mode="json"),
                run_id=tracker.run_id,
            )
            bundle = _bundle(spec, model)
            save_training_checkpoint(last_path, bundle, **state)
            if best_epoch == epoch:
                save_training_checkpoint(best_path, bundle, **state)
            # Logged only once checkpointed: an epoch that a kill makes `--resume` redo is not logged twice.
            tracker.log_metrics(metrics, step=epoch)
        hooks.epoch_end(epoch, metrics)
        barrier(world)
        patience = cfg.train.early_stop_patience
        if out_of_time or (patience is not None and stale >= patience):
            hooks.message(
                "time budget reached" if out_of_time else f"early stop: no improvement in {stale} validations"
            )
            break
    return TrainResult(best, best_epoch, epoch + 1, history, best_path, last_path)
