"""ModelBundle: what a checkpoint or MLflow model carries, so a model file is self-describing.

Everything is tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)` can read it:
a crafted pickle cannot run code on load.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medseg import __version__
from medseg.config import InferConfig
from medseg.core import LabelScheme, scheme_from_json, scheme_to_json
from medseg.errors import ModelFileError
from medseg.io.atomic import atomic_path
from medseg.transforms.preprocess import PreprocessPlan

FORMAT = "medseg-bundle/1"
BUNDLE_FILE = "medseg_bundle.pt"  # name of the weights-only bundle beside checkpoints and inside MLflow models


@dataclass
class ModelBundle:
    """Weights + how to rebuild the network + the task metadata inference needs.

    `norm_stats`: per channel [mean, std] of raw nonzero intensities in the training data and the fraction of
    voxels that are 0 (older bundles lack it), for the input warnings of `inference.case_predict`.
    `preprocess`: crop and target spacing, so inference prepares a case exactly as training did.
    `infer`: how the model predicts (sliding window, threshold, post-processing chosen after training).
    `structure`: layer attributes changed by structured pruning (`nets.pruning`); empty for an unpruned network.
    A bundle read from an ONNX file has no `state_dict`: its graph holds the weights, `weights_digest` names them.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    task: str
    channels: list[str]
    scheme: LabelScheme
    label_map: dict[str, int]
    patch_size: list[int]
    norm_stats: list[list[float]]
    preprocess: PreprocessPlan = field(default_factory=PreprocessPlan)
    infer: InferConfig = field(default_factory=InferConfig)
    structure: dict[str, dict[str, Any]] = field(default_factory=dict)
    medseg_version: str = __version__
    weights_digest: str = ""  # the weights' identity when they live elsewhere (an ONNX graph), not serialised

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "state_dict": self.state_dict,
            "task": self.task,
            "channels": self.channels,
            "scheme": scheme_to_json(self.scheme),
            "label_map": self.label_map,
            "patch_size": list(self.patch_size),
            "norm_stats": self.norm_stats,
            "preprocess": self.preprocess.to_json(),
            "infer": self.infer.model_dump(mode="json"),
            "structure": self.structure,
            "medseg_version": self.medseg_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelBundle:
        return cls(
            model_name=d["model_name"],
            model_kwargs=dict(d["model_kwargs"]),
            state_dict=d["state_dict"],
            task=d["task"],
            channels=list(d["channels"]),
            scheme=scheme_from_json(d["scheme"]),
            label_map={k: int(v) for k, v in d["label_map"].items()},
            patch_size=list(d["patch_size"]),
            norm_stats=[list(x) for x in d["norm_stats"]],
            # bundles from before resampling carry only the crop flag: they predict at each input's own spacing
            preprocess=PreprocessPlan.from_json(
                d.get("preprocess", {"crop_foreground": d.get("crop_foreground", True)})
            ),
            infer=InferConfig.model_validate(d.get("infer", {})),
            structure=dict(d.get("structure", {})),
            medseg_version=d.get("medseg_version", "?"),
        )

    def build_model(self) -> torch.nn.Module:
        """The network with the bundle's weights.

        Built on the meta device and filled by assignment: random initialisation of a 90 M-parameter model
        costs ~1 s of CPU per load (measured on the H100 host) for weights that are overwritten anyway.
        """
        from medseg.nets import create_model
        from medseg.nets.pruning import apply_structure

        try:
            with torch.device("meta"):
                model = create_model(self.model_name, **self.model_kwargs)
            apply_structure(model, self.structure, self.state_dict)
            model.load_state_dict(self.state_dict, assign=True)
            if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                raise RuntimeError("state of the model not all in the state_dict")
        except RuntimeError:  # constructors that compute on tensors (MONAI SwinUNETR) or non-persistent buffers
            model = apply_structure(create_model(self.model_name, **self.model_kwargs), self.structure, self.state_dict)
            model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically: an interrupted save leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`; refuse anything that needs arbitrary unpickling."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError("checkpoint not found", path=str(p), hint="pass a .pt file written by medseg train")
    with p.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip (local file header first), or a bare pickle (protocol mark) with the legacy format
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ModelFileError(
            "not a PyTorch checkpoint (neither a torch.save zip nor a pickle)",
            path=str(p),
            hint="pass the .pt that medseg train wrote (best.pt), a .onnx from medseg export, or runs:/<run_id>/model",
        )
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"refused to load: the file needs arbitrary code to unpickle ({str(exc).splitlines()[0][:120]})",
            path=str(p),
            hint="only load checkpoints written by medseg from sources you trust",
        ) from None
    except Exception as exc:  # a truncated or corrupt file: torch raises RuntimeError, EOFError, KeyError, ...
        raise ModelFileError(
            f"not a readable checkpoint ({exc.__class__.__name__})",
            path=str(p),
            hint="copy or download the file again",
        ) from None
    if not isinstance(payload, dict) or payload.get("bundle", {}).get("format") != FORMAT:
        raise ModelFileError("not a medseg checkpoint (no model bundle inside)", path=str(p))
    return payload
