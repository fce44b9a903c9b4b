"""Collected outputs shared by the membership-inference attack tests (computed once per session)."""

import numpy as np
import pytest
import torch
from mia_helpers import TinyNet, batches_of, gaussian_classes, memorise

from trd.attacks import collect_outputs


@pytest.fixture(scope="session")
def same_distribution_outputs():
    """A fixed random model on two i.i.d. halves of one data set: no attack should beat chance."""
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = gaussian_classes(2400, seed=1)
    # Large batches: every vmap call over a batch has a fixed cost that dominates for a model this small.
    outputs = collect_outputs(model, batches_of(images, labels, size=400), "cpu", grad_norms=True)
    return outputs.subset(np.arange(1200)), outputs.subset(np.arange(1200, 2400))


@pytest.fixture(scope="session")
def overfit_outputs():
    """Members: 100 training samples memorised by a wide MLP; non-members: fresh samples of the same task."""
    torch.manual_seed(0)
    model = TinyNet(hidden=128)
    train_images, train_labels = gaussian_classes(100, seed=2)
    test_images, test_labels = gaussian_classes(100, seed=3)
    memorise(model, train_images, train_labels)
    return (collect_outputs(model, batches_of(train_images, train_labels), "cpu", grad_norms=True),
            collect_outputs(model, batches_of(test_images, test_labels), "cpu", grad_norms=True))
