"""Predict a folder end to end, as nnU-Net's `nnUNetPredictor` does: the model, its task's input layouts, this
process's shard, the device and the output folder are all settled here; the CLI only parses and renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Case, Task
from medseg.data.layouts import detect_cases, unused_files
from medseg.errors import DataError, MedsegError, ModelFileError
from medseg.inference.data_windows import data_windows
from medseg.inference.engine_choice import check_engine, choose_engine, open_engine
from medseg.inference.engines import Engine, NetworkFacts
from medseg.inference.model_source import MLFLOW_SCHEMES, load_bundle
from medseg.inference.output_folder import (
    CaseResult,
    PredictionsSource,
    check_output_dir,
    refuse_writing_over_inputs,
    weights_fingerprint,
)
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.bundle import ModelBundle
from medseg.io.onnx_bundle import read_onnx_bundle
from medseg.pipelines import task_for_model
from medseg.runtime import current_runtime, resolve_device


@dataclass
class PredictPlan:
    """The cases this process predicts (its shard), the files of the input folder no case reads, and the shard."""

    cases: list[Case]
    unused: list[Path]
    shard: tuple[int, int]
    layout: str


def _check_dicom_input(layout: str, input_dir: Path | None = None) -> None:
    if layout != "dicom":
        raise DataError(
            f"DICOM-SEG output needs DICOM input (these cases are {layout} NIfTI files)",
            path=str(input_dir) if input_dir else None,
            hint="pass a folder of DICOM series or use --output-format nifti",
        )


class FolderPredictor:
    """A loaded model with its task and settings, ready to predict folders.

    Args:
        bundle: the self-describing model (weights, task metadata, inference settings).
        device: `auto`, `cpu` or `cuda` (this torchrun rank's GPU).
        overlap, sw_batch_size, tta: per-run overrides of the bundle's settings (None keeps them).
        postprocess: apply the model's post-processing rules (False keeps every component).
        amp: bf16 autocast on CUDA. allow_missing: mask missing channels (cross-modal models).
        single_pass: one forward over the foreground box instead of sliding windows.
        engine: `torch`, `torch-bf16`, `onnxruntime`, `openvino`, or `auto` (the fastest accurate one of this
            machine, measured once and cached). onnx: the exported graph when the model is an `.onnx` file.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        device: str = "auto",
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        tta: bool | None = None,
        postprocess: bool = True,
        amp: bool = True,
        allow_missing: bool = False,
        single_pass: bool = False,
        engine: str = "torch",
        onnx: tuple[Path, NetworkFacts] | None = None,
        source: str = "a model bundle",
        on_message=None,
    ) -> None:
        self.bundle = bundle
        self.task: Task = task_for_model(bundle.task, bundle.channels, bundle.label_map)
        self.runtime = current_runtime()
        self.device = resolve_device(device, self.runtime)
        self.infer: InferConfig = bundle.infer.override(
            overlap=overlap, sw_batch_size=sw_batch_size, tta=tta, postprocess=None if postprocess else {}
        )
        self.amp, self.allow_missing, self.single_pass = amp, allow_missing, single_pass
        self.source = source
        if engine == "tensorrt" and single_pass:
            raise MedsegError("--single-pass cannot run on --engine tensorrt", hint="TensorRT is built for windows")
        if engine != "auto":
            check_engine(engine, self.device, onnx[0] if onnx else None)  # an impossible choice fails at once
        self._engine_name, self._onnx, self._on_message = engine, onnx, on_message
        self._folder_cases: list[Case] = []  # auto judges accuracy on these (none planned: random windows)

    @cached_property
    def engine(self) -> Engine:
        """The network's runtime, opened (or, for `auto`, measured) on first use: after `plan`, so a folder that
        cannot be predicted is refused before `auto` spends a minute timing engines."""
        onnx_path, facts = self._onnx or (None, None)
        fingerprint = weights_fingerprint(self.bundle)  # overlap, TTA or post-processing change no graph or choice
        sw_batch = self.infer.sw_batch_size
        if self._engine_name == "auto":
            engine = choose_engine(
                self.bundle,
                self.device,
                self.amp,
                fingerprint,
                sw_batch,
                onnx_path,
                facts,
                self._on_message,
                sample=self._sample_windows,
            )
        else:
            engine = open_engine(
                self._engine_name, self.bundle, self.device, self.amp, fingerprint, onnx_path, facts, sw_batch
            )
        if self.single_pass and engine.fixed_size and self._on_message:  # UNETR, or a graph traced at the window
            window = "x".join(map(str, engine.fixed_size))
            self._on_message(f"--single-pass: {engine.name} runs this network on {window} windows only: sliding them")
        return engine

    @property
    def model_can_mask(self) -> bool:
        """Whether the network can leave out missing modalities (cross-modal models)."""
        return self.engine.supports_modality_mask

    @classmethod
    def from_model(cls, model_ref: str, tracking_uri: str | None = None, **kwargs) -> FolderPredictor:
        """From a checkpoint/bundle file, an exported `.onnx` file or an MLflow model URI (`runs:/`, `models:/`)."""
        if model_ref.endswith(".onnx"):
            path = Path(model_ref)
            if not path.is_file():
                raise ModelFileError("model not found", path=str(path), hint="pass a file from `medseg export`")
            bundle, facts, export = read_onnx_bundle(path)
            kwargs.setdefault("engine", "onnxruntime")  # not the library's torch default; `auto` picks among ONNX ones
            if kwargs.get("single_pass") and export.get("spatial") == "fixed":
                raise MedsegError(
                    f"--single-pass feeds the whole foreground box, but this ONNX file has fixed window axes "
                    f"({'x'.join(map(str, bundle.patch_size))})",
                    path=str(path),
                    hint="drop --single-pass, or predict with the .pt checkpoint",
                )
            source = f"an exported ONNX graph ({export['precision']})"
            return cls(bundle, source=source, onnx=(path, NetworkFacts(**facts)), **kwargs)
        source = (
            "the weights-only bundle inside the MLflow model (its pickled module is never loaded)"
            if model_ref.startswith(MLFLOW_SCHEMES)
            else "a weights-only checkpoint"
        )
        return cls(load_bundle(model_ref, tracking_uri), source=source, **kwargs)

    def plan(self, input_dir: Path, part: tuple[int, int] | None = None, dicom_seg: bool = False) -> PredictPlan:
        """Find the cases of `input_dir` in any layout the model can read; keep this process's shard
        (`part` = (i, n), else torchrun's rank of world size, else all). `dicom_seg`: the run will write DICOM-SEG
        files, which reference DICOM input."""
        layout, cases = detect_cases(input_dir, self.task.prediction_layouts)
        if dicom_seg:
            _check_dicom_input(layout.name, input_dir)
        shard = part or (self.runtime.rank, self.runtime.world_size)
        unused = unused_files(input_dir, cases) if shard[0] == 0 else []
        self._folder_cases = cases  # every shard samples the same cases, so torchrun's ranks choose one engine
        return PredictPlan(cases[shard[0] :: shard[1]], unused, shard, layout.name)

    def _sample_windows(self, count: int) -> torch.Tensor | None:
        """Windows of the folder's first readable cases, preprocessed, for `auto` to judge engines' accuracy on
        (None when none is readable: random windows then, and each bad case fails on its own line)."""
        try:
            windows = data_windows(self.bundle, self._folder_cases, count, allow_missing=self.allow_missing)
        except DataError:
            return None
        return torch.from_numpy(np.stack(windows))

    def check_output(self, plan: PredictPlan, output_dir: Path, overwrite: bool = False) -> None:
        """Refuse an output folder that would replace inputs or holds another model's predictions (unless
        `overwrite`), before the engine is opened: `auto` spends a minute timing engines."""
        refuse_writing_over_inputs(plan.cases, output_dir)
        check_output_dir(output_dir, PredictionsSource.of(self.bundle, self.infer), overwrite)

    def run(
        self,
        plan: PredictPlan,
        output_dir: Path,
        *,
        overwrite: bool = False,
        save_probabilities: bool = False,
        overlays: bool = False,
        dicom_seg: bool = False,
        workers: int | None = None,
        steps_on_device: bool | None = None,
        on_case: Callable[[CaseResult], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> list[CaseResult]:
        """Predict the planned cases into `output_dir` (guarded, resumable, atomic); per-case results.
        `dicom_seg` adds a DICOM-SEG per case, which needs DICOM input to reference. `workers`: reader processes
        (None: the default of `inference.workers`); none where /dev/shm is too small (said through `on_message`).
        `steps_on_device`: preprocess and restore on the network's device (None: on a GPU)."""
        if dicom_seg:
            _check_dicom_input(plan.layout)
        self.check_output(plan, output_dir, overwrite)  # before `self.engine` below opens (or times) the engines
        opts = PredictOptions(
            infer=self.infer,
            engine=self.engine,
            save_probabilities=save_probabilities,
            overwrite=overwrite,
            allow_missing=self.allow_missing,
            overlays=overlays,
            amp=self.amp,
            single_pass=self.single_pass,
            device=self.device,
            shard=plan.shard,
            overlay_channels=self.task.overlay_channels,
            dicom_seg=dicom_seg,
            workers=workers,
            steps_on_device=steps_on_device,
        )
        return predict_folder(plan.cases, self.bundle, output_dir, opts, on_case, on_message)
