"""Folder throughput of `predict_folder` as its worker processes grow: cases/s, peak host memory, GPU busy time.

    python benchmarks/bench_throughput.py --engine identity --cases 12 --workers 0 1 2 4        # 2-core CPU ceiling
    python benchmarks/bench_throughput.py --model best.pt --cases 6 --workers 0 2               # a real network
    python benchmarks/bench_throughput.py --model transunet3d_base --device cuda --cases 50 --workers 1 2 4 8 16
    python benchmarks/bench_throughput.py ... --steps-on host     # GPU: preprocess/restore on the host instead

`--engine identity` (this benchmark only) replaces the network by one that costs nothing: its logits are the
z-scored FLAIR, T1ce and T2 minus 2, so the masks, post-processing and writes look like a real prediction while
the pipeline's own work (decode, preprocess, stitching, restore, encode) sets the pace. Cases: anatomy-based
240x240x155 BraTS-like cases (written once under --data). Each worker count runs after a one-case warm-up, in
alternating order over --rounds; every run's outputs are compared with the first run's (identical masks, whatever
the workers) and, for a real network, scored against the ground truth (mean region Dice). Peak memory is the
largest sum of proportional set sizes (PSS: pages shared between processes divided among them) over this process
and its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_infer import ensure_cases
from untrained import untrained_bundle

from medseg.data.layouts import detect_cases
from medseg.inference.engines import NetworkFacts, TorchEngine
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.bundle import ModelBundle, load_checkpoint
from medseg.io.gzip_codec import BACKEND
from medseg.memory import keep_freed_memory
from medseg.pipelines.brats import LAYOUTS
from medseg.transforms.labels import labels_to_regions


class IdentityEngine:
    """A network that costs nothing: logits from the input's FLAIR, T1ce and T2 (benchmark only)."""

    name = "identity"
    stride, fixed_size, min_size, supports_modality_mask = 1, None, 1, False

    def __init__(self, out_channels: int) -> None:
        self.out_channels = out_channels

    def __call__(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x[:, [3, 1, 2][: self.out_channels]] - 2.0


def load_bundle(ref: str, patch: int) -> ModelBundle:
    if Path(ref).is_file():
        return ModelBundle.from_dict(load_checkpoint(ref)["bundle"])
    return untrained_bundle(ref, patch)


class Sampler:
    """Peak memory (PSS) of this process tree and the share of samples the GPU was busy, every 0.1 s."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.peak, self.busy, self.samples = cuda, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            procs = [me, *me.children(recursive=True)]
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    rss += p.memory_full_info().pss
            self.peak = max(self.peak, rss)
            if self.cuda:
                self.busy += torch.cuda.utilization() > 0
                self.samples += 1
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("[!.]*.nii.gz"))}


def mean_dice(pred: dict[str, np.ndarray], cases, bundle: ModelBundle) -> float:
    scores = []
    for case in cases:
        truth = labels_to_regions(np.asarray(nib.load(case.label).dataobj), bundle.scheme, case.label_map)
        guess = labels_to_regions(pred[f"{case.id}.nii.gz"], bundle.scheme, case.label_map)
        for t, g in zip(truth, guess, strict=True):
            denom = t.sum() + g.sum()
            scores.append(1.0 if denom == 0 else 2 * np.logical_and(t, g).sum() / denom)
    return float(np.mean(scores))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transunet3d_base", help="checkpoint, or a registered name (untrained)")
    p.add_argument("--patch", type=int, default=128, help="roi for a model given by name")
    p.add_argument("--engine", choices=("model", "identity"), default="model")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=Path("outputs/bench_throughput"))
    p.add_argument(
        "--steps-on",
        choices=["auto", "host", "device"],
        default="auto",
        help="where cases are preprocessed and restored (auto: the device when it is a GPU)",
    )
    p.add_argument("--no-keep-freed", action="store_true", help="leave glibc's malloc defaults (for comparison)")
    a = p.parse_args()
    if not a.no_keep_freed:
        keep_freed_memory()  # as `medseg predict` does
    device = torch.device(a.device)
    bundle = load_bundle(a.model, a.patch)
    model = bundle.build_model()
    engine = (
        IdentityEngine(NetworkFacts.of(model).out_channels)
        if a.engine == "identity"
        else TorchEngine(model, device, bf16=device.type == "cuda")
    )
    folder = ensure_cases(a.data, a.cases + 1, seed=2000)
    _, cases = detect_cases(folder, LAYOUTS)
    warm, timed = cases[:1], cases[1:]
    work = Path(tempfile.mkdtemp(prefix="bench_throughput-"))
    print(
        f"{len(timed)} cases of 240x240x155, {engine.name if a.engine == 'identity' else bundle.model_name} on "
        f"{device}, {psutil.cpu_count()} cores, gzip {BACKEND}, torch threads {torch.get_num_threads()}"
    )
    rates: dict[int, list[float]] = {w: [] for w in a.workers}
    peaks: dict[int, int] = dict.fromkeys(a.workers, 0)
    busy: dict[int, list[float]] = {w: [] for w in a.workers}
    reference: dict[str, np.ndarray] | None = None
    same = dict.fromkeys(a.workers, True)
    for r in range(a.rounds):
        for w in a.workers if r % 2 == 0 else a.workers[::-1]:
            steps = None if a.steps_on == "auto" else a.steps_on == "device"
            opts = PredictOptions(engine=engine, device=device, workers=w, steps_on_device=steps)
            predict_folder(warm, bundle, work / f"warm_{r}_{w}", opts)
            out = work / f"out_{r}_{w}"
            with Sampler(device.type == "cuda") as sampler:
                t0 = time.perf_counter()
                results = predict_folder(timed, bundle, out, opts)
                seconds = time.perf_counter() - t0
            assert all(x.status == "ok" for x in results), [x.error for x in results if x.status != "ok"]
            rates[w].append(len(timed) / seconds)
            peaks[w] = max(peaks[w], sampler.peak)
            if sampler.samples:
                busy[w].append(sampler.busy / sampler.samples)
            got = masks(out)
            reference = reference or got
            same[w] &= got.keys() == reference.keys() and all(np.array_equal(got[k], reference[k]) for k in got)
    dice = "" if a.engine == "identity" else f", mean Dice {mean_dice(reference, timed, bundle):.4f}"
    print(f"outputs identical across worker counts: {all(same.values())}{dice}")
    print("workers  cases/s (median of rounds)  peak host memory GB  GPU busy")
    for w in a.workers:
        gpu = f"{100 * statistics.median(busy[w]):.0f} %" if busy[w] else "-"
        print(f"{w:7d}  {statistics.median(rates[w]):8.2f}  {peaks[w] / 1e9:8.2f}  {gpu}")


if __name__ == "__main__":
    main()
