"""lit_transfer: transfer learning on small image datasets with PyTorch Lightning, timm and Albumentations."""

__version__ = "0.1.0"

__all__ = ["__version__"]
