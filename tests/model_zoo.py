"""Small instances of every architecture, shared by the model tests and the GC-execution tests."""

import torch

from trd.models import build_model

NUM_CLASSES = 5
IMAGE_SIZE = 16

# Small enough for CPU tests, but every architecture and block type is exercised:
# resnet50 for bottlenecks, wrn10_2 for a projection shortcut in each group.
SMALL_CONFIGS = {
    "cnn": ("cnn", {"width": 8}),
    "cnn_no_bn": ("cnn", {"width": 8, "batchnorm": False}),
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "wrn10_2": ("wrn10_2", {"dropout": 0.0}),
    "vit": ("vit", {"depth": 2, "width": 32, "heads": 2, "patch": 4}),
    "mobilenet_v2": ("mobilenet_v2", {"width": 0.25}),  # depthwise (grouped) convolutions, ReLU6
}


def build_small(config_id: str, **overrides) -> torch.nn.Module:
    name, options = SMALL_CONFIGS[config_id]
    return build_model(name, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **{**options, **overrides})
