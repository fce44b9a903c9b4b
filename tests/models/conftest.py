"""Small instances of every architecture, shared by the model tests."""

import pytest
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
}


def build_small(config_id: str, **overrides):
    name, options = SMALL_CONFIGS[config_id]
    return build_model(name, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **{**options, **overrides})


@pytest.fixture(params=sorted(SMALL_CONFIGS))
def config_id(request) -> str:
    return request.param


@pytest.fixture
def small_model(config_id):
    torch.manual_seed(0)
    return build_small(config_id)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def make_small():
    """build_small as a fixture, for tests that need several instances or overrides."""
    return build_small
