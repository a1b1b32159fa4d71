"""Networks: `create_model(name, **kwargs)` is the only door; models never read configs."""

from medseg.nets import baselines, segformer3d, swinunet3d, transunet3d  # noqa: F401  (registration)
from medseg.nets._registry import ModelInfo, create_model, list_models, model_info, register_model
from medseg.nets.base import SegmentationModel

__all__ = ["ModelInfo", "SegmentationModel", "create_model", "list_models", "model_info", "register_model"]
