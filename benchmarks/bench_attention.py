"""Full vs efficient (linear) bottleneck attention of TransUNet-3D: time and peak memory as the patch grows.

Each configuration runs in a fresh process, so its peak resident memory (VmHWM) is its own. Two measurements:
the bottleneck alone (`GlobalCrossModalTransformer` of transunet3d_small, forward + backward over the tokens of
all 4 modalities at 1/16 of the patch) and the whole cross-modal network's forward pass (inference) on one patch.

    python benchmarks/bench_attention.py --sizes 128 192 --rounds 3

One line per configuration: `attention part=bottleneck|network attention=full size=128 tokens=2048 s=.. peak_gb=..`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.memory import peak_rss_bytes


def _peak_gb() -> float:
    return peak_rss_bytes() / 1e9


def measure(part: str, attention: str, size: int, rounds: int, threads: int) -> dict:
    """Run in the child process: median seconds over `rounds` after one warm-up, and the process's peak memory."""
    import torch

    from medseg.nets import create_model
    from medseg.nets.blocks.cross_modal import GlobalCrossModalTransformer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    modalities, n = 4, (size // 16) ** 3
    if part == "bottleneck":
        net = GlobalCrossModalTransformer(256, 6, 8, 1024, attention=attention)
        tokens = torch.randn(1, modalities * n, 256, requires_grad=True)
        mask = torch.ones(1, modalities, dtype=torch.bool)

        def step() -> None:
            net(tokens, mask, n).square().mean().backward()

    else:
        net = create_model("transunet3d_small", attention=attention).eval()
        x = torch.randn(1, modalities, size, size, size)

        def step() -> None:
            with torch.no_grad():
                net(x)

    base = _peak_gb()
    step()  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    tokens_total = modalities * n
    return {"part": part, "attention": attention, "size": size, "tokens": tokens_total,
            "s": statistics.median(times), "peak_gb": _peak_gb(), "start_gb": base}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 192])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", default="bottleneck,network")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        part, attention, size = args.child.split(":")
        print(json.dumps(measure(part, attention, int(size), args.rounds, args.threads)))
        return
    for part in args.parts.split(","):
        for size in args.sizes:
            for attention in ("full", "efficient"):
                cmd = [sys.executable, __file__, "--child", f"{part}:{attention}:{size}", "--rounds", str(args.rounds),
                       "--threads", str(args.threads)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"attention part={part} attention={attention} size={size} failed: {out.stderr[-300:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"attention part={part} attention={attention} size={size} tokens={r['tokens']} s={r['s']:.3f} "
                      f"peak_gb={r['peak_gb']:.2f} start_gb={r['start_gb']:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
