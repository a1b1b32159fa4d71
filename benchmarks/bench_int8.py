"""Which int8 quantisation of an exported model keeps its probabilities and is faster: per variant, the sigmoid
difference to PyTorch fp32 and the agreement of thresholded masks (window Dice per region) on real windows of held-out
cases, and the time of one call on a batch of 4 windows in OpenVINO and ONNX Runtime (median of 5, after a warm-up).

Variants: `fp32` (the plain export), `ort_all` (ONNX Runtime static QDQ of every op it supports), `ort_conv` (the same,
convolutions only: what `medseg export --int8` does), `nncf` (NNCF's post-training quantisation with its transformer
preset; needs `pip install nncf`).

    python benchmarks/bench_int8.py --model best.pt --calibration TRAIN_CASES --held-out TEST_CASES

One line per variant and engine: `int8 variant=.. engine=.. prob_diff_max=.. prob_diff_mean=.. window_dice=a/b/c
ms_per_4_windows=..`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.inference.engines import NetworkFacts, OnnxRuntimeEngine, OpenVinoEngine
from medseg.inference.model_source import load_bundle
from medseg.inference.onnx_export import INT8_OPS, export_onnx, quantise_int8
from medseg.workflows.export import calibration_windows


def _feed(window: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": np.ascontiguousarray(window[None], np.float32), "modality_mask": np.ones((1, len(window)), bool)}


def nncf_static(fp32: Path, out: Path, windows) -> None:
    import nncf
    import onnx

    quantised = nncf.quantize(
        onnx.load(str(fp32)),
        nncf.Dataset(list(windows), _feed),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(windows),
    )
    onnx.save(quantised, str(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained cross-modal medseg checkpoint")
    p.add_argument("--calibration", type=Path, required=True, help="training cases (calibration windows)")
    p.add_argument("--held-out", type=Path, required=True, help="other cases (the windows compared)")
    p.add_argument("--variants", default="fp32,ort_all,ort_conv,nncf")
    a = p.parse_args()
    bundle = load_bundle(a.model, None)
    model = bundle.build_model().eval()
    facts = NetworkFacts.of(model)
    work = Path(tempfile.mkdtemp(prefix="bench_int8-"))
    fp32 = work / "fp32.onnx"
    export_onnx(bundle, fp32)
    calib = calibration_windows(bundle, a.calibration, count=32)
    x = torch.from_numpy(np.stack(calibration_windows(bundle, a.held_out, count=8, seed=1)))
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        ref = torch.sigmoid(model(x, mask)).numpy()
    for variant in a.variants.split(","):
        path = fp32 if variant == "fp32" else work / f"{variant}.onnx"
        if variant in ("ort_all", "ort_conv"):
            shutil.copyfile(fp32, path)  # quantised in place, as `medseg export --int8` does
            quantise_int8(path, calib, facts, len(bundle.channels), None if variant == "ort_all" else INT8_OPS)
        elif variant == "nncf":
            nncf_static(fp32, path, calib)
        for name in ("openvino", "onnxruntime"):
            engine = OpenVinoEngine(path, facts) if name == "openvino" else OnnxRuntimeEngine(path, facts, x.device)
            probs = np.concatenate([torch.sigmoid(engine(x[i : i + 4], mask[i : i + 4])).numpy() for i in (0, 4)])
            diff = np.abs(probs - ref)
            a_, b_ = ref > 0.5, probs > 0.5
            dice = [2 * (a_[:, r] & b_[:, r]).sum() / max(1, a_[:, r].sum() + b_[:, r].sum()) for r in range(3)]
            engine(x[:4], mask[:4])
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                engine(x[:4], mask[:4])
                times.append(time.perf_counter() - t0)
            print(
                f"int8 variant={variant} engine={name} prob_diff_max={diff.max():.3g} prob_diff_mean={diff.mean():.3g}"
                f" window_dice={'/'.join(f'{d:.4f}' for d in dice)} ms_per_4_windows={1000 * np.median(times):.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
