"""Block-addressable classifiers (CNN, ResNet, WideResNet, ViT) and safetensors weight I/O."""

from trd.models.base import FEATURES_TAP, TRAINABLE_MODES, TrdModel
from trd.models.batchnorm import untracked_batchnorm
from trd.models.io import load_model, load_state, read_metadata, save_model
from trd.models.registry import MODEL_NAMES, build_model, is_model_name, model_options

__all__ = [
    "FEATURES_TAP",
    "MODEL_NAMES",
    "TRAINABLE_MODES",
    "TrdModel",
    "build_model",
    "is_model_name",
    "load_model",
    "load_state",
    "model_options",
    "read_metadata",
    "save_model",
    "untracked_batchnorm",
]
