"""Sliding-window prediction of one preprocessed volume (MONAI `sliding_window_inference`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from medseg.inference.engines import Engine

# Above this many output voxels x channels, stitch on the CPU so GPU memory stays bounded (sw runs on GPU).
GPU_STITCH_LIMIT = 3 * 256**3


def _whole_volume(x: torch.Tensor, predictor, stride: int, min_size: int) -> torch.Tensor:
    """One forward pass over (1, M, x, y, z), zero-padded at the end of each axis to a multiple of `stride` and to
    at least `min_size`."""
    spatial = x.shape[2:]
    pad = [max(s, min_size) - s + (-max(s, min_size)) % stride for s in spatial]
    padded = F.pad(x, [v for p in reversed(pad) for v in (0, p)])
    return predictor(padded)[..., : spatial[0], : spatial[1], : spatial[2]]


@torch.no_grad()
def sliding_predict(
    network: Engine,
    image: np.ndarray | torch.Tensor,
    roi: Sequence[int],
    *,
    overlap: float,
    mode: str,
    sw_batch_size: int,
    device: torch.device | str = "cpu",
    tta: bool = False,
    modality_mask: torch.Tensor | None = None,
    single_pass: bool = False,
    stitch_on_cpu: bool = False,
    exclusive: bool = False,
    keep_on_device: bool = False,
) -> torch.Tensor:
    """Region probabilities (R, x, y, z) float32 (sigmoid, or softmax without background when `exclusive`) on the
    CPU for a (M, x, y, z) image; `network` is an inference
    engine (`inference.engines`: PyTorch, ONNX Runtime, OpenVINO), which also owns the arithmetic precision.

    Overlap, blending and window batch are required (their defaults live in `config.InferConfig` alone; MONAI's
    own, 0.25 and constant, differ from the BraTS references). `tta` averages over all 8 axis-flip combinations.
    `single_pass` runs the network once over the whole volume (zero-padded to its stride) instead of overlapping
    windows: fewer FLOPs, but the network sees a context it was not trained on, so check Dice before relying on
    it (benchmarks/). `stitch_on_cpu` keeps the accumulators in host memory (retry after CUDA out-of-memory).
    `keep_on_device`: return the probabilities where they were stitched, for restoring on the device.
    """
    device = torch.device(device)
    # np.array copies memory-mapped cache arrays (read-only) into a writable buffer torch can own.
    x = torch.from_numpy(np.array(image, dtype=np.float32)) if isinstance(image, np.ndarray) else image.float()
    x = x[None].to(device)
    mask = None if modality_mask is None else modality_mask.to(device)[None]

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        return network(patch, None if mask is None else mask.expand(patch.shape[0], -1))

    out_channels = network.out_channels
    small = x[0, 0].numel() * out_channels <= GPU_STITCH_LIMIT
    stitch_device = device if small and not stitch_on_cpu else torch.device("cpu")
    flips = [()] if not tta else [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]
    probs = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        if single_pass and network.fixed_size is None:
            logits = _whole_volume(xi, predictor, network.stride, network.min_size)
        else:
            logits = sliding_window_inference(
                xi,
                list(roi),
                sw_batch_size,
                predictor,
                overlap=overlap,
                mode=mode,
                device=stitch_device,
                sw_device=device,
            )
        # softmax classes: the regions' probabilities (background dropped: it is 1 - their sum)
        p = torch.softmax(logits.float(), dim=1)[:, 1:] if exclusive else torch.sigmoid(logits.float())
        p = torch.flip(p, dims) if dims else p
        probs = p if probs is None else probs + p
    probs = (probs / len(flips))[0]
    return probs if keep_on_device else probs.cpu()
