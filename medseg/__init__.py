"""medseg: 3D multimodal medical image segmentation with cross-modal transformers."""

__version__ = "0.1.0"
