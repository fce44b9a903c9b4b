"""collect_outputs: per-sample logits, loss, features and gradient norms."""

import numpy as np
import pytest
import torch
from mia_helpers import NUM_CLASSES, TinyNet, batches_of, gaussian_classes
from torch import nn

from trd.attacks.features import SampleOutputs, collect_outputs


def trained_statistics_model(dtype=torch.float32) -> TinyNet:
    """A TinyNet whose BatchNorm running statistics differ from a fresh one, so eval mode matters."""
    torch.manual_seed(0)
    model = TinyNet().to(dtype)
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(gaussian_classes(64, seed=100 + seed)[0].to(dtype) * 3.0 + 1.0)
    return model


def slow_grad_norms(module, images, labels, params):
    """One autograd backward per sample, batch of one: the reference for the vmap implementation."""
    norms = []
    for x, y in zip(images, labels):
        loss = nn.functional.cross_entropy(module(x[None]), y[None])
        grads = torch.autograd.grad(loss, params)
        norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    return torch.stack(norms).numpy()


def test_outputs_match_the_model_in_eval_mode_and_the_mode_is_restored():
    model = trained_statistics_model()
    images, labels = gaussian_classes(50, seed=0)
    outputs = collect_outputs(model, batches_of(images, labels, size=16), "cpu")
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(images)
    assert outputs.logits.dtype == np.float64 and outputs.logits.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(outputs.logits, expected.double().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(outputs.labels, labels.numpy())
    # float32 logits differ in the last bits with the batch size, so the loss is checked on the logits returned.
    reference_loss = nn.functional.cross_entropy(torch.from_numpy(outputs.logits), labels, reduction="none").numpy()
    np.testing.assert_allclose(outputs.loss, reference_loss, rtol=1e-12)
    assert outputs.grad_norm is None and outputs.features is None


def test_head_replaces_the_model_head_and_features_are_the_penultimate_activations():
    model = trained_statistics_model()
    private_head = nn.Linear(32, 7)
    images, labels = gaussian_classes(40, seed=1)
    labels = labels + 3  # the private head has more classes than the model's own
    outputs = collect_outputs(model, batches_of(images, labels), "cpu", head=private_head, feature_tap="features")
    model.eval()
    with torch.no_grad():
        features = model.features(images)
        logits = private_head(features)
    assert outputs.logits.shape == (40, 7)
    np.testing.assert_allclose(outputs.logits, logits.double().numpy(), rtol=1e-6, atol=1e-6)
    assert outputs.features.shape == (40, 32)
    np.testing.assert_allclose(outputs.features, features.numpy(), rtol=1e-6, atol=1e-6)


def test_a_block_tap_needs_forward_with_taps():
    with pytest.raises(ValueError, match="forward_with_taps"):
        collect_outputs(TinyNet(), batches_of(*gaussian_classes(4, seed=0)), "cpu", feature_tap="body.0")


def test_vmap_gradient_norms_equal_a_per_sample_autograd_loop_in_float64():
    model = trained_statistics_model(torch.float64)
    images, labels = gaussian_classes(23, seed=2)
    images = images.double()
    outputs = collect_outputs(model, batches_of(images, labels, size=10), "cpu", grad_norms=True, grad_chunk=4)
    assert model.training
    model.eval()
    expected = slow_grad_norms(model, images, labels, list(model.parameters()))
    np.testing.assert_allclose(outputs.grad_norm, expected, rtol=1e-10)
    assert len(np.unique(outputs.grad_norm)) == 23


def test_gradient_norms_through_a_separate_head_include_its_parameters():
    model = trained_statistics_model(torch.float64)
    private_head = nn.Linear(32, 6).double()
    images, labels = gaussian_classes(9, seed=3)
    images = images.double()
    outputs = collect_outputs(model, batches_of(images, labels + 2, size=5), "cpu", head=private_head,
                              grad_norms=True)
    model.eval()
    # The model's own head is bypassed, so its (zero) gradient adds nothing to the reference.
    params = list(model.body.parameters()) + list(private_head.parameters())
    expected = slow_grad_norms(lambda x: private_head(model.features(x)), images, labels + 2, params)
    np.testing.assert_allclose(outputs.grad_norm, expected, rtol=1e-10)


def test_frozen_parameters_still_count_in_the_gradient_norm():
    model = trained_statistics_model(torch.float64)
    images, labels = gaussian_classes(5, seed=4)
    images = images.double()
    full = collect_outputs(model, [(images, labels)], "cpu", grad_norms=True).grad_norm
    for p in model.body.parameters():
        p.requires_grad_(False)
    frozen = collect_outputs(model, [(images, labels)], "cpu", grad_norms=True).grad_norm
    np.testing.assert_allclose(frozen, full, rtol=1e-12)


def test_subset_keeps_rows_together_and_shapes_are_checked():
    outputs = collect_outputs(TinyNet(), batches_of(*gaussian_classes(12, seed=5)), "cpu", grad_norms=True,
                              feature_tap="features")
    part = outputs.subset([3, 0, 7])
    assert len(part) == 3
    np.testing.assert_array_equal(part.logits, outputs.logits[[3, 0, 7]])
    np.testing.assert_array_equal(part.grad_norm, outputs.grad_norm[[3, 0, 7]])
    np.testing.assert_array_equal(part.features, outputs.features[[3, 0, 7]])
    with pytest.raises(ValueError, match="rows"):
        SampleOutputs(logits=np.zeros((3, 2)), labels=np.zeros(3, dtype=np.int64), loss=np.zeros(2))


def test_block_taps_and_gradient_norms_on_a_trd_cnn():
    from trd.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", num_classes=5, image_size=8, width=4).double()
    private_head = nn.Linear(model.feature_dim, 3).double()
    images = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    outputs = collect_outputs(model, [(images, labels)], "cpu", head=private_head, feature_tap="block0",
                              grad_norms=True)
    model.eval()
    with torch.no_grad():
        _, tapped = model.forward_with_taps(images, ["block0", "features"])
    np.testing.assert_allclose(outputs.features, tapped["block0"].reshape(6, -1).float().numpy(), rtol=1e-6)
    np.testing.assert_allclose(outputs.logits, private_head(tapped["features"]).detach().numpy(), rtol=1e-12)
    params = [p for name, p in model.named_parameters() if not name.startswith("head.")]
    expected = slow_grad_norms(lambda x: private_head(model.features(x)), images, labels,
                               params + list(private_head.parameters()))
    np.testing.assert_allclose(outputs.grad_norm, expected, rtol=1e-10)
