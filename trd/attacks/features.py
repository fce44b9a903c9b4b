"""Per-sample model outputs that membership-inference attacks score: logits, loss, gradient norm, features.

Everything is computed with the model in eval mode (BatchNorm uses running statistics, dropout is
off), so a sample's outputs do not depend on which other samples share its batch; the model's
train/eval mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

PENULTIMATE_TAP = "features"  # same name as trd.models.base.FEATURES_TAP
# Per-sample gradients held at once by vmap (chunk x number of parameters values): 1 GiB in float32.
GRAD_VALUES_PER_CHUNK = 2**28


@dataclass
class SampleOutputs:
    """Row i of every array belongs to sample i. Optional arrays are None when not collected."""

    logits: np.ndarray  # [N, C] float64
    labels: np.ndarray  # [N] int64
    loss: np.ndarray  # [N] float64 cross-entropy, computed from the float64 logits
    grad_norm: np.ndarray | None = None  # [N] float64 L2 norm of d loss / d parameters
    features: np.ndarray | None = None  # [N, D] float32, the tapped activations flattened

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.logits.ndim != 2 or len(self.logits) != n:
            raise ValueError(f"logits must be [N, C] with N = {n} labels, got shape {self.logits.shape}")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != n:
                raise ValueError(f"{f.name} has {len(value)} rows but there are {n} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> SampleOutputs:
        """Rows idx (an index array or boolean mask) of every collected array."""
        idx = np.asarray(idx)
        return SampleOutputs(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
                                for f in fields(self)})


def cross_entropy_float64(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits.double(), dim=1).gather(1, labels[:, None]).squeeze(1)


def _forward(model: nn.Module, x: torch.Tensor, head, feature_tap: str | None):
    """(logits, tapped activations or None), logits = head(model.features(x)) when a head is given."""
    if feature_tap is None:
        logits = head(model.features(x)) if head is not None else model(x)
        return logits, None
    if hasattr(model, "forward_with_taps"):
        taps = [feature_tap] if head is None else [feature_tap, PENULTIMATE_TAP]
        logits, tapped = model.forward_with_taps(x, taps)
        if head is not None:
            logits = head(tapped[PENULTIMATE_TAP])
        return logits, tapped[feature_tap]
    if feature_tap != PENULTIMATE_TAP:
        raise ValueError(f"feature_tap {feature_tap!r} needs a model with forward_with_taps; "
                         f"{type(model).__name__} only offers {PENULTIMATE_TAP!r} via features()")
    features = model.features(x)
    # Without forward_with_taps there is no guarantee that forward() factors through features(),
    # so the model's own logits come from a second, plain forward pass.
    logits = head(features) if head is not None else model(x)
    return logits, features


class _HeadOnFeatures(nn.Module):
    """model.features followed by a separate head, as one module so functional_call sees both parameter sets."""

    def __init__(self, body: nn.Module, head: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.body = body
        self.head = head  # registered as a submodule (with its parameters) only if it is an nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.features(x))


def per_sample_grad_norms(module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          chunk: int | None = None) -> torch.Tensor:
    """L2 norm over all of module's parameters of each sample's cross-entropy gradient, as float64 [N].

    Every parameter counts, frozen or not: the attacker holds the released weights and can
    differentiate with respect to any of them. Call with the module in eval mode. chunk: samples per
    vmap call; by default as many as fit GRAD_VALUES_PER_CHUNK gradient values.
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = {name: b.detach() for name, b in module.named_buffers()}

    def sample_loss(p, x, y):
        logits = functional_call(module, (p, buffers), (x[None],))
        return nn.functional.cross_entropy(logits, y[None])

    def squared_norm(x, y):
        grads = grad(sample_loss)(params, x, y)
        return sum(g.double().pow(2).sum() for g in grads.values())

    batched = vmap(squared_norm)
    # vmap materialises a full parameter-sized gradient per sample, so chunks bound memory; they
    # should still be as large as that allows, since each vmap call has a sizeable fixed cost.
    if chunk is None:
        chunk = max(1, GRAD_VALUES_PER_CHUNK // max(1, sum(p.numel() for p in params.values())))
    norms = [batched(images[i:i + chunk], labels[i:i + chunk]) for i in range(0, len(images), chunk)]
    return torch.cat(norms).sqrt()


def collect_outputs(model: nn.Module, batches: Iterable, device: torch.device | str, *,
                    head: Callable[[torch.Tensor], torch.Tensor] | None = None, grad_norms: bool = False,
                    feature_tap: str | None = None, grad_chunk: int | None = None) -> SampleOutputs:
    """Per-sample outputs of model over batches of (images, labels).

    head: logits = head(model.features(x)) instead of model(x), e.g. the private source head.
    grad_norms: also the per-sample gradient norm of the loss w.r.t. the parameters of the model
        (and of head, when it is an nn.Module), grad_chunk samples per vmap call (see per_sample_grad_norms).
    feature_tap: also the activations at this tap, flattened per sample: "features" for the
        penultimate features, or a block name of a model with forward_with_taps.
    """
    device = torch.device(device)
    grad_module = _HeadOnFeatures(model, head) if head is not None else model
    was_training = model.training, head.training if isinstance(head, nn.Module) else None
    model.eval()
    if isinstance(head, nn.Module):
        head.eval()
    logits_parts, label_parts, norm_parts, feature_parts = [], [], [], []
    try:
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            with torch.no_grad():
                logits, tapped = _forward(model, images, head, feature_tap)
            logits_parts.append(logits.double().cpu())
            label_parts.append(labels.long().cpu())
            if tapped is not None:
                feature_parts.append(tapped.reshape(len(images), -1).float().cpu())
            if grad_norms:
                norm_parts.append(per_sample_grad_norms(grad_module, images, labels.long(), grad_chunk).cpu())
    finally:
        model.train(was_training[0])
        if isinstance(head, nn.Module):
            head.train(was_training[1])
    if not label_parts:
        raise ValueError("collect_outputs saw no batches")
    logits = torch.cat(logits_parts)
    labels = torch.cat(label_parts)
    return SampleOutputs(
        logits=logits.numpy(),
        labels=labels.numpy(),
        loss=cross_entropy_float64(logits, labels).numpy(),
        grad_norm=torch.cat(norm_parts).numpy() if grad_norms else None,
        features=torch.cat(feature_parts).numpy() if feature_tap is not None else None,
    )
