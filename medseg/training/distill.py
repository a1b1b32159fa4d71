"""Knowledge distillation: a student learns the teacher's temperature-softened outputs beside the labels.

The teacher runs once per training case (sliding windows over the cached, preprocessed volume) and its logits are
cached as float16 next to the volume, so every epoch's random patches, flips included, carry the teacher's logits
as extra label channels at no network cost: the same transforms crop image, label and teacher logits alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.data.cache import read_entry
from medseg.io.atomic import atomic_path
from medseg.io.bundle import ModelBundle

TEACHER_KEY = "teacher"  # dataset item key of a case's cached teacher logits


def _teacher_id(teacher: ModelBundle) -> str:
    """A short digest of the teacher's weights: cached logits are reused only for the same teacher."""
    h = hashlib.sha256()
    for name in sorted(teacher.state_dict):
        t = teacher.state_dict[name]
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def teacher_logits(model: nn.Module, image: np.ndarray, teacher: ModelBundle, device: torch.device) -> np.ndarray:
    """The teacher's blended logits (C, x, y, z) float16 over one preprocessed volume (M, x, y, z)."""
    x = torch.from_numpy(np.array(image, dtype=np.float32))[None].to(device)
    infer = teacher.infer
    logits = sliding_window_inference(
        x, list(teacher.patch_size), infer.sw_batch_size, model, overlap=infer.overlap, mode=infer.mode
    )
    return logits[0].to(torch.float16).cpu().numpy()


def attach_teacher_logits(
    items: Sequence[dict],
    teacher: ModelBundle,
    device: torch.device,
    on_case: Callable[[str, bool], None] | None = None,
) -> list[dict]:
    """Items with the path of each case's teacher logits, computed once per (case, teacher) beside its cache
    entry and written atomically (an interrupted run recomputes only what is missing)."""
    tid = _teacher_id(teacher)
    model = None
    out = []
    for item in items:
        path = Path(item["entry"]) / f"teacher-{tid}.npy"
        hit = path.exists()
        if not hit:
            model = model or teacher.build_model().to(device)
            logits = teacher_logits(model, read_entry(Path(item["entry"])).image, teacher, device)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, logits)
        out.append({**item, TEACHER_KEY: str(path)})
        if on_case:
            on_case(item["id"], hit)
    return out


class DistillationLoss(nn.Module):
    """(1 - alpha) * the task loss on labels + alpha * T^2 * KL(teacher_T || student_T) per voxel.

    The target carries the labels followed by the teacher's logits (as many channels as the student's output).
    Sigmoid regions use the binary KL of each region's softened probability; softmax classes the categorical KL.
    T^2 keeps the soft term's gradient scale independent of T (Hinton et al. 2015).
    """

    def __init__(self, task_loss: nn.Module, temperature: float, alpha: float, exclusive: bool) -> None:
        super().__init__()
        self.task_loss = task_loss
        self.temperature = temperature
        self.alpha = alpha
        self.exclusive = exclusive

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        s, q = student.float() / t, teacher.float() / t
        if self.exclusive:
            kl = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(q, dim=1), log_target=True, reduction="none")
            return kl.sum(dim=1).mean()
        p = torch.sigmoid(q)
        kl = p * (F.logsigmoid(q) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-q) - F.logsigmoid(-s))
        return kl.mean()

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        main = outputs[0] if isinstance(outputs, list) else outputs
        c = main.shape[1]
        labels, teacher = target[:, :-c], target[:, -c:]
        soft = self.soft_term(main, teacher)
        return (1 - self.alpha) * self.task_loss(outputs, labels) + self.alpha * self.temperature**2 * soft
