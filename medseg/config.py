"""Experiment configuration: YAML validated by pydantic at the edge, so inner code trusts its inputs."""

from __future__ import annotations

import difflib
import itertools
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from medseg.errors import ConfigError
from medseg.redact import redact_tree


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class IntensityRule(_Strict):
    """How one channel is normalised: `zscore` per case on nonzero voxels (MRI), `ct` (clip to the dataset's
    foreground 0.5-99.5 percentiles, z-score with its mean/std; needs a manifest scanned with labels) or `window`
    (clip to `window` = [lower, upper] HU, scale to [0, 1])."""

    kind: Literal["zscore", "ct", "window"] = "zscore"
    window: tuple[float, float] | None = None

    @field_validator("window")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] >= v[1]:
            raise ValueError("window must be [lower, upper] with lower < upper")
        return v

    @model_validator(mode="after")
    def _window_given(self) -> IntensityRule:
        if self.kind == "window" and self.window is None:
            raise ValueError("kind 'window' needs window: [lower, upper]")
        return self


class DataConfig(_Strict):
    """Where cases come from and how volumes are preprocessed (identical for training and inference).

    `spacing`: the voxel size (mm, along R, A, S) the network sees: `auto` plans it from the training cases
    (median, nnU-Net's anisotropy rule), `native` never resamples, or three numbers.
    `intensity`: a rule per channel name; channels not listed use `ct` when named CT, else `zscore`.
    """

    manifest: str | None = None
    cache_dir: str = ".medseg_cache"
    crop_foreground: bool = True
    spacing: Literal["auto", "native"] | tuple[PositiveFloat, PositiveFloat, PositiveFloat] = "auto"
    intensity: dict[str, IntensityRule] = Field(default_factory=dict)
    num_workers: int = Field(2, ge=0)


class ModelConfig(_Strict):
    """A registered network name plus keyword overrides for its entrypoint."""

    name: str = "transunet3d_tiny"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Strict):
    """Optimisation, patch sampling and validation schedule."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(2, ge=1)
    patch_size: tuple[int, int, int] = (128, 128, 128)
    samples_per_volume: int = Field(1, ge=1)
    pos_neg_ratio: float = Field(2.0, ge=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    grad_clip: float = Field(12.0, gt=0)
    loss: Literal["dice_ce", "dice_focal"] = "dice_ce"
    val_every: int = Field(1, ge=1)
    early_stop_patience: int | None = Field(None, ge=1)
    amp: bool = True
    seed: int = 0
    deterministic: bool = False
    max_minutes: float | None = Field(None, gt=0)
    overlays: int = Field(2, ge=0)

    @field_validator("patch_size")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 8:
            raise ValueError("patch_size entries must be >= 8 voxels")
        return v


class RegionRule(_Strict):
    """Post-processing of one region's connected components: `none`, `min_volume` (drop components under
    `min_volume_mm3`) or `largest` (keep the largest only)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["none", "min_volume", "largest"] = "none"
    min_volume_mm3: float = Field(0.0, ge=0)

    def describe(self) -> str:
        if self.kind == "min_volume":
            return f"drop components < {self.min_volume_mm3:g} mm3"
        return "keep largest component" if self.kind == "largest" else "none"


class InferConfig(_Strict):
    """How a model predicts: the one owner of these defaults, stored in every model bundle and overridden per
    run by `medseg predict` flags. The BraTS references use overlap 0.5 and gaussian blending.

    `postprocess`: a rule per region name; None (the default) lets training choose them on its validation cases.
    """

    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(2, ge=1)
    mode: Literal["gaussian", "constant"] = "gaussian"
    tta: bool = False
    threshold: float = Field(0.5, gt=0, lt=1)
    postprocess: dict[str, RegionRule] | None = None

    def override(self, **changes: Any) -> InferConfig:
        """A validated copy with every non-None keyword replacing the stored setting (per-run flags)."""
        updates = {k: v for k, v in changes.items() if v is not None}
        return InferConfig.model_validate({**self.model_dump(), **updates})


class TrackingConfig(_Strict):
    """MLflow settings; the URI may carry a password and is never printed."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "medseg"
    system_metrics: bool = True
    register_name: str | None = None


class DistillConfig(_Strict):
    """Knowledge distillation (`medseg distill`): the student trains on `(1 - alpha)` x the task loss plus `alpha` x
    T^2 x the KL divergence to the teacher's outputs softened by `temperature` T. `teacher`: a checkpoint or MLflow
    model URI."""

    teacher: str
    temperature: PositiveFloat = 2.0
    alpha: float = Field(0.5, ge=0, le=1)


class PruneConfig(_Strict):
    """Structured pruning (`medseg prune`): remove `amount` of the channels of `source` (a checkpoint or MLflow model
    URI), then fine-tune as `train` says. The network, patch size and inference settings are the source's."""

    source: str
    amount: float = Field(gt=0, lt=1)


class ExperimentConfig(_Strict):
    """Everything that defines a run; saved next to every result and logged to MLflow."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distill: DistillConfig | None = None
    prune: PruneConfig | None = None


def override_key(override: str) -> str:
    """The dotted key of a `key=value` override."""
    return override.split("=", 1)[0].strip()


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        # not "key=value" in the text: the CLI's secret redaction reads that as an API key and masks it
        raise ConfigError(
            f"override '{item}' has no '='", hint=f"write it as {item}=<value>, e.g. --set train.epochs=5"
        )
    return override_key(item).split("."), yaml.safe_load(item.split("=", 1)[1])


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML scalars/lists) to a raw config dict."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{key}' is not a section")
        node[keys[-1]] = value
    return raw


def value_at(raw: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in a raw config dict (None where a section or the key is absent)."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the configs shipped inside the package (`--config brats_cpu`)."""
    return sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))


def resolve_config(ref: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (works from any folder and from an installed wheel)."""
    p = Path(ref)
    if p.is_file():
        return p
    bundled = BUNDLED_CONFIGS / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if bundled.is_file() and p.parent in (Path("."), Path("configs")):
        return bundled
    raise ConfigError(
        "config file not found", path=str(p), hint=f"pass a YAML file or one of {', '.join(bundled_configs())}"
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping: PyYAML keeps the last, so a second `train:`
    section silently dropped every setting of the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):  # PyYAML's own error names it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, flags: dict[str, str] | None = None
) -> ExperimentConfig:
    """Read a YAML config (safe loader), apply overrides and validate (see `validate_config`)."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = resolve_config(path)
        try:
            raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # a SafeLoader
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                path=str(p),
                hint="save the file as UTF-8",
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc.__class__.__name__
            raise ConfigError(
                f"not valid YAML: {problem}{where}",
                path=str(p),
                hint="fix that line: `key: value` pairs, sections indented with spaces (no tabs), each key once",
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError("top level must be a mapping", path=str(p))
    return validate_config(apply_overrides(raw, overrides or []), overrides, flags, path)


def validate_config(
    raw: dict[str, Any],
    overrides: list[str] | None = None,
    flags: dict[str, str] | None = None,
    path: str | Path | None = None,
) -> ExperimentConfig:
    """`raw` (a config with `overrides` applied) validated; errors name the bad key, and where its value came
    from: the config file `path`, a `--set` override, or a command's own option (`flags`: override -> option as
    typed, e.g. `distill.alpha=1.5` -> `--alpha 1.5`)."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        shown = f"--config {path}" if path else "--config brats_smoke"
        given = {override_key(o): o for o in overrides or []}  # in order: the last override of a key is applied
        unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden"]  # a typo first: it explains the rest
        if unknown:
            key = ".".join(map(str, unknown[0]["loc"]))
            typed = next((given[k] for k in given if k == key or k.startswith(f"{key}.")), None)
            raise ConfigError(
                f"unknown config key '{key}'" + (f" (--set {typed})" if typed else ""),
                path=str(path) if path and not typed else None,  # a --set typo is not the file's
                hint=_unknown_key_hint([str(part) for part in unknown[0]["loc"]]),
            ) from None
        loc, msg = _first_problem(exc.errors())
        flags = flags or {}
        # the override that set the key, one of its parents (a whole section) or one of its fields; else one that
        # opened an optional section (`--set prune.amount=1.5` alone leaves prune.source unset)
        related = [k for k in given if loc == k or loc.startswith(f"{k}.") or k.startswith(f"{loc}.")]
        section = loc.split(".")[0]
        optional = section in ExperimentConfig.model_fields and ExperimentConfig.model_fields[section].default is None
        opened = [k for k in given if k.split(".")[0] == section] if optional else []
        source = max(related, key=len, default=None) or (opened[-1] if opened else None)
        if source is not None and given[source] in flags:  # naming the config file sent users to the wrong place
            raise ConfigError(f"invalid value {flags[given[source]]}: {msg}", hint="see the command's --help") from None
        if source is not None:
            raise ConfigError(
                f"invalid value --set {given[source]} (config key '{loc}'): {msg}",
                hint=f"`medseg config show {shown}` prints every key's current value",
            ) from None
        given_value = exc.errors()[0].get("input")
        if isinstance(given_value, str | int | float | bool):  # from a file: the value is not in the message yet
            msg = f"{given_value!r}: {msg}"
        raise ConfigError(
            f"invalid value for config key '{loc}': {msg}",
            path=str(path) if path else None,
            hint="correct it in the file (`medseg config show` prints every key with its default value)",
        ) from None


def _section(parts: list[str]) -> type[BaseModel] | None:
    """The config model of a dotted section (`[]`: the top level; None where it is no section of models)."""
    model: type[BaseModel] = ExperimentConfig
    for part in parts:
        field = model.model_fields.get(part)
        if field is None:
            return None
        kinds = (field.annotation, *typing.get_args(field.annotation))  # `DistillConfig | None` too
        found = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _unknown_key_hint(loc: list[str]) -> str:
    """The way to the key meant: nesting for a dotted YAML key, the near spelling and the section's valid keys."""
    *parents, key = loc
    nested = key.split(".")
    if len(nested) > 1 and (inner := _section([*parents, *nested[:-1]])) and nested[-1] in inner.model_fields:
        return f"in a YAML file, nest it: '{nested[0]}:' with '{'.'.join(nested[1:])}: ...' indented under it"
    model = _section(parents)
    if model is None:
        return "`medseg config show` prints every valid key"
    valid = list(model.model_fields)
    close = difflib.get_close_matches(key, valid, n=1)
    where = f"under '{'.'.join(parents)}'" if parents else "at the top level"
    return (f"did you mean '{close[0]}'? " if close else "") + f"valid keys {where}: {', '.join(valid)}"


def _first_problem(errors: list[dict]) -> tuple[str, str]:
    """The first invalid key and what is wrong with it. A key that accepts several forms (`data.spacing`: auto,
    native or three numbers) gets one error per form, located under a pydantic label such as "literal['auto',
    'native']": they are named together, each by its form, instead of the label posing as part of the key."""
    field = tuple(itertools.takewhile(lambda x: isinstance(x, int) or re.fullmatch(r"\w+", x), errors[0]["loc"]))
    if errors[0]["type"] == "missing" and field and isinstance(field[-1], int):  # a list one value short
        return ".".join(map(str, field[:-1])), f"too few values (no item {field[-1] + 1})"
    same = [e for e in errors if tuple(e["loc"][: len(field)]) == field]
    if len(same) == 1 and tuple(same[0]["loc"]) == field:
        return ".".join(map(str, field)), same[0]["msg"]
    forms = [
        (".".join(map(str, e["loc"][len(field) :])).replace("constrained-", "") or "value", e["msg"]) for e in same
    ]
    return ".".join(map(str, field)), "; ".join(f"as {form}: {msg}" for form, msg in forms)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, credentials redacted: the form saved beside results, logged to MLflow and
    shown by `medseg config show`."""
    return yaml.safe_dump(redacted_dump(cfg), sort_keys=False)


def redacted_dump(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as plain data with credentials in any URI (e.g. `tracking.uri`) replaced by ***: every copy
    that leaves the process (MLflow params and artifacts, checkpoints, printed configs) is made from this."""
    return redact_tree(cfg.model_dump(mode="json"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
