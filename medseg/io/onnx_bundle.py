"""A model bundle carried inside an ONNX file: the graph holds the weights, its metadata everything else, so the
`.onnx` file alone is enough to predict (channels, regions, label map, patch size, post-processing, intensities)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from medseg.errors import ModelFileError
from medseg.io.bundle import FORMAT, ModelBundle

METADATA_KEY = "medseg_bundle"


def require_modules(what: str, *modules: str) -> None:
    """`what` needs these modules of the `deploy` extra: one line naming the missing ones, not an ImportError
    traceback from deep inside."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        names = " ".join(m.replace("_", "-") for m in missing)
        raise ModelFileError(
            f"{what} needs {', '.join(missing)} (not installed)",
            hint=f"pip install {names} (all of medseg's deploy extra: pip install -e '.[deploy]' in a checkout)",
        )


def bundle_metadata(bundle: ModelBundle, facts: dict[str, Any], export: dict[str, Any]) -> str:
    """JSON of the bundle without its weights, the network facts the sliding window needs, and how it was
    exported (precision, fixed or dynamic spatial axes, verified difference to PyTorch)."""
    meta = bundle.to_dict()
    meta.pop("state_dict")
    return json.dumps({**meta, "network": facts, "export": export})


def write_metadata(path: Path, text: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.save(model, str(path))


def read_onnx_bundle(path: Path) -> tuple[ModelBundle, dict[str, Any], dict[str, Any]]:
    """(bundle without weights, network facts, export record) of an ONNX file written by `medseg export`."""
    require_modules("an .onnx model", "onnx", "onnxruntime")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"not a readable ONNX file ({exc.__class__.__name__})", path=str(path)) from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelFileError(
            "ONNX file without medseg metadata (channels, regions, label map)",
            path=str(path),
            hint="export it with `medseg export`",
        )
    meta = json.loads(props[METADATA_KEY])
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"unknown medseg bundle format {meta.get('format')!r}", path=str(path))
    bundle = ModelBundle.from_dict({**meta, "state_dict": {}})
    bundle.weights_digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return bundle, meta["network"], meta["export"]
