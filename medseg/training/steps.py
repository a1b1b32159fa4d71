"""One training epoch: loader batches split into optimizer steps, mixed precision, clipping; per-epoch seeding."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from monai.data.utils import set_rnd

from medseg.training.spec import ProgressHooks, TrainSpec


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


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (fp32 elsewhere): no GradScaler needed, same exponent range as fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def grad_scaler(spec: TrainSpec) -> torch.amp.GradScaler | None:
    """fp16 (GPUs without bf16) needs a GradScaler; bf16 and fp32 do not."""
    cuda = spec.device.type == "cuda"
    if cuda and spec.cfg.train.amp and not torch.cuda.is_bf16_supported():
        return torch.amp.GradScaler("cuda")
    return None


def train_epoch(model, loader, loss_fn, optimizer, scaler, spec: TrainSpec, hooks: ProgressHooks) -> tuple[float, int]:
    """Mean loss and number of patches of one pass over `loader`."""
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


def seed_epoch(loader, seed: int, epoch: int, rank: int) -> None:
    """Seed every RNG from (seed, epoch, rank) so an epoch's patches and dropout do not depend on history:
    a resumed run continues bit-for-bit (on CPU) where an uninterrupted one would be."""
    s = seed + 10007 * epoch + 101 * rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    set_rnd(loader.dataset, s)  # transforms in the main process; workers are re-seeded from torch per epoch
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
