"""What keeping freed memory (`medseg.memory.keep_freed_memory`, set by every `medseg` process) buys, against
glibc's defaults: fresh processes, alternating order, same inputs and seeds.

    python benchmarks/bench_freed_memory.py sliding --model best.pt --case CASE_DIR [--rounds 2]
    python benchmarks/bench_freed_memory.py train [--rounds 1] -- train brats --data DATA --config brats_cpu \\
        --set train.epochs=6 --set train.val_every=3 --set train.max_minutes=null --no-tracking --out /tmp/b

`sliding`: seconds of one fp32 sliding window (the model's patch, overlap and window batch) over CASE_DIR's
preprocessed volume, in the PyTorch engine. `train`: a `medseg` command line run through `medseg.cli.app.main`
with and without it; prints its wall time and its epoch lines (samples/s), whose losses and Dice must agree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD_SLIDING = """
import sys, time, torch
from pathlib import Path
import medseg.memory
if sys.argv[1] == "kept":
    medseg.memory.keep_freed_memory()
from medseg.data.layouts import detect_cases
from medseg.inference.case_predict import prepare_case
from medseg.inference.engines import TorchEngine
from medseg.inference.model_source import load_bundle
from medseg.inference.sliding import sliding_predict
from medseg.pipelines import get_task
b = load_bundle(sys.argv[2])
case = Path(sys.argv[3])
_, cases = detect_cases(case.parent, get_task("brats").prediction_layouts)
prepared = prepare_case(next(c for c in cases if c.id == case.name), b.preprocess, False)
engine = TorchEngine(b.build_model(), torch.device("cpu"), bf16=False)
t = time.perf_counter()
sliding_predict(engine, prepared.pre.image, b.patch_size, overlap=b.infer.overlap, mode=b.infer.mode,
                sw_batch_size=b.infer.sw_batch_size)
print(time.perf_counter() - t)
"""

CHILD_CLI = """
import sys
import medseg.cli.app as cli
if sys.argv[1] == "defaults":
    cli.keep_freed_memory = lambda: False
sys.argv = ["medseg", *sys.argv[2:]]
cli.main()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sliding", "train"])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--case", type=Path, help="one BraTS case folder")
    ap.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, command = ap.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: the medseg command line (train)
    for r in range(a.rounds):
        for mode in ("defaults", "kept") if r % 2 == 0 else ("kept", "defaults"):
            if a.what == "sliding":
                args = [sys.executable, "-c", CHILD_SLIDING, mode, str(a.model), str(a.case)]
                out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
                print(f"round {r} {mode:8} sliding window {float(out.split()[-1]):.1f} s", flush=True)
            else:
                t = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", CHILD_CLI, mode, *command], capture_output=True, text=True)
                epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
                print(f"round {r} {mode:8} exit {done.returncode} wall {time.perf_counter() - t:.1f} s", flush=True)
                print("\n".join(f"    {line}" for line in epochs), flush=True)


if __name__ == "__main__":
    main()
