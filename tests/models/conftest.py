"""Fixtures over the small instances of every architecture (tests/model_zoo.py)."""

import pytest
import torch
from model_zoo import IMAGE_SIZE, SMALL_CONFIGS, build_small


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
